// Playing a clip of segments while it still records (issue 15; docs/capture.md, "Playing a
// clip while it records"). Media Source Extensions: the clip's init segment goes in once, then
// each segment's fragments as the hub stores it, each verified and decrypted here first. The
// fragments carry their own decode times (tfdt), so the SourceBuffer puts each where it
// belongs whatever order it came in: a segment that arrives late fills its gap, one that has
// not come GRACE_MS after the player reached its gap is jumped over and named. When the clip's
// own event comes (the doorbell's signed list of its segments), the stream is ended once all
// of them are in (or, if one is missing, once playback has caught up and GRACE_MS have passed;
// one that comes after that is still put in place), and the same <video> plays on to the
// finished clip's end.
import * as segments from "/static/js/segments.js";

export const GRACE_MS = 4000;

// The MIME type with codecs for MediaSource, from the init segment's avcC box
// (AVCProfileIndication, profile_compatibility, AVCLevelIndication follow its version byte),
// and its AAC track's when the clip has sound (clip.audio): `avc1.xxxxxx, mp4a.40.2`.
export function mimeOf(init) {
  const at = find(init, "avcC");
  if (at < 0) throw new Error("fMP4: the clip's init segment has no avcC box (not H.264)");
  const hex = (b) => b.toString(16).padStart(2, "0");
  const codecs = [`avc1.${hex(init[at + 5])}${hex(init[at + 6])}${hex(init[at + 7])}`];
  if (find(init, "mp4a") >= 0) codecs.push(audioCodecOf(init));
  return `video/mp4; codecs="${codecs.join(", ")}"`;
}

// Where a box's type first appears in bytes (-1: nowhere).
function find(bytes, type) {
  const t = [...type].map((c) => c.charCodeAt(0));
  for (let i = 4; i + 4 <= bytes.length; i++) {
    if (bytes[i] === t[0] && bytes[i + 1] === t[1] && bytes[i + 2] === t[2] && bytes[i + 3] === t[3]) return i;
  }
  return -1;
}

// "mp4a.OTI.AOT" from the esds box: the DecoderConfigDescriptor's object type (0x40, MPEG-4
// audio) and the first 5 bits of its AudioSpecificConfig (2, AAC-LC); "mp4a.40.2" if the
// descriptors cannot be read.
export function audioCodecOf(init) {
  const esds = find(init, "esds");
  let pos = esds + 8;                      // past the type and the version/flags
  const descriptor = (tag) => {            // a descriptor's body offset, or -1
    if (init[pos] !== tag) return -1;
    pos++;
    for (let n = 0; n < 4 && init[pos++] & 0x80; n++) { /* the size's bytes */ }
    return pos;
  };
  if (esds < 0 || descriptor(0x03) < 0) return "mp4a.40.2";
  const flags = init[pos + 2];             // after the ES_ID: which optional fields follow
  pos += 3;
  if (flags & 0x80) pos += 2;              // dependsOn_ES_ID
  if (flags & 0x40) pos += 1 + init[pos];  // URL
  if (flags & 0x20) pos += 2;              // OCR_ES_Id
  if (descriptor(0x04) < 0) return "mp4a.40.2";
  const oti = init[pos];
  pos += 13;
  if (descriptor(0x05) < 0) return `mp4a.${oti.toString(16)}.2`;
  return `mp4a.${oti.toString(16)}.${init[pos] >> 3}`;
}

const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

export class LiveClip {
  // video: the <video>; device, first: the clip's first segment; open(seq) -> what app.js's
  // openItem gives ({manifest, blob} or {error, tampered}); say(text, bad) shows news.
  constructor({ video, device, first, open, say, note }) {
    Object.assign(this, { video, device, first, open, say, note });
    this.offered = new Set();
    this.appended = [];            // seqs in the SourceBuffer, in the order they went in
    this.listed = null;            // the clip event's segment seqs, once it has come
    this.finishedAt = 0;
    this.arrivedAt = 0;            // when the last segment went in
    this.refused = null;
    this.ended = false;
    this.gapSince = 0;
    this.skipped = [];
    this.queue = Promise.resolve();
    this.ms = new MediaSource();
    this.opened = new Promise((ok) => this.ms.addEventListener("sourceopen", ok, { once: true }));
    video.src = URL.createObjectURL(this.ms);
    this.timer = setInterval(() => this.tick(), 250);
  }

  stop() { clearInterval(this.timer); }

  // A segment of this clip is stored at the hub (or was before the player started).
  offer(seq) {
    if (this.offered.has(seq) || this.refused) return;
    this.offered.add(seq);
    const got = this.open({ device: this.device, seq, kind: "segment" });
    this.queue = this.queue.then(() => got).then((g) => this.take(seq, g))
      .catch((err) => this.refuse(seq, err));
  }

  async take(seq, got) {
    if (this.refused) return;
    if (got.error) throw Object.assign(got.error, { tampered: got.tampered });
    const m = got.manifest;
    if (m.kind !== "segment" || (seq !== this.first && m.parent !== String(this.first))) {
      throw new Error(`seq ${seq} is a ${m.kind} that the doorbell did not sign as part of this clip`);
    }
    const [init, fragments] = segments.splitInit(new Uint8Array(await got.blob.arrayBuffer()));
    if (!this.sb) {
      await this.opened;
      this.init = init;
      const mime = mimeOf(init);
      this.video.dataset.codecs = mime;
      this.sb = this.ms.addSourceBuffer(mime);
      this.sb.mode = "segments";
      await this.append(init);
    } else if (!same(init, this.init)) {
      throw new Error(`segment seq ${seq} belongs to another clip`);
    }
    await this.append(fragments);
    this.appended.push(seq);
    this.arrivedAt = performance.now();
    this.video.dataset.segments = String(this.appended.length);
    this.maybeEnd();
  }

  append(bytes) {
    return new Promise((ok, bad) => {
      const sb = this.sb;
      const done = () => { sb.removeEventListener("error", fail); ok(); };
      const fail = () => { sb.removeEventListener("updateend", done); bad(new Error("the browser could not play a segment")); };
      sb.addEventListener("updateend", done, { once: true });
      sb.addEventListener("error", fail, { once: true });
      if (this.ms.readyState === "ended") this.ended = false;    // appending re-opens the stream
      sb.appendBuffer(bytes);
    });
  }

  // The clip's event came: the doorbell's own list of its segments, and the ones it lost.
  finish(body) {
    if (this.listed) return;
    this.listed = body.segments.map(Number);
    this.lost = body.segments_lost || [];
    this.finishedAt = performance.now();
    this.say("Finished recording; playing the rest as it arrives.");
    this.queue = this.queue.then(() => this.maybeEnd());
  }

  maybeEnd() {
    if (!this.listed || this.ended || !this.sb || this.sb.updating || this.ms.readyState !== "open") return;
    const missing = this.listed.filter((s) => !this.appended.includes(s));
    // a listed segment not here yet may still come: the stream is ended without it only once
    // playback has caught up with what is here and GRACE_MS have passed since the clip event
    // and since the last segment came (on a slow uplink the small clip event comes first and
    // the segments follow it for as long as the link needs)
    const b = this.video.buffered, edge = b.length ? b.end(b.length - 1) : 0;
    const quiet = performance.now() - Math.max(this.finishedAt, this.arrivedAt);
    if (missing.length && (quiet < GRACE_MS || this.video.currentTime < edge - 0.5)) return;
    this.ended = true;
    this.ms.endOfStream();
    const lost = this.lost.length ? `; the doorbell could not store segment(s) ${this.lost.map((i) => i + 1).join(", ")}` : "";
    this.say(missing.length || lost
      ? `Finished recording; ${this.appended.length} of ${this.listed.length} segment(s) here` +
        (missing.length ? ` (seq ${missing.join(", ")} never arrived)` : "") + lost
      : `Finished recording: all ${this.listed.length} segment(s) here, each signed and verified`, !!(missing.length || lost));
    this.video.dataset.finished = "1";
  }

  refuse(seq, err) {
    if (this.refused) return;
    this.refused = err;
    this.video.dataset.refused = String(seq);
    this.say(`${err.tampered === false ? "Cannot open" : "Tampered"}: segment seq ${seq} of this clip ` +
      `will not open (${err.message}). It was refused; playback stops at the last segment that verified.`, true);
    if (this.sb && this.ms.readyState === "open" && !this.sb.updating) this.ms.endOfStream();
  }

  // Every 250 ms: end the stream once the grace after the clip event is over, and jump over a
  // gap the player is stuck at (a missing segment) once it has waited GRACE_MS for it.
  tick() {
    this.maybeEnd();
    const v = this.video, b = v.buffered;
    let stuck = null;
    for (let i = 0; i < b.length; i++) {
      if (v.currentTime < b.start(i) - 0.05 && (i === 0 || v.currentTime >= b.end(i - 1) - 0.3)) { stuck = b.start(i); break; }
    }
    if (stuck === null) { this.gapSince = 0; return; }
    if (!this.gapSince) this.gapSince = performance.now();
    if (v.currentTime > 0.3 && performance.now() - this.gapSince < GRACE_MS) return;
    const from = v.currentTime;
    v.currentTime = stuck + 0.01;
    this.gapSince = 0;
    if (from > 0.3) {
      this.skipped.push([from, stuck]);
      v.dataset.skipped = JSON.stringify(this.skipped);
      this.note(`A segment is missing: skipped from ${from.toFixed(1)} s to ${stuck.toFixed(1)} s ` +
        "(it had not arrived; if it comes later it is put back in place)");
    }
  }
}

// The clip view while the clip records: its player, and the news that feeds it; returns the
// status line, the list of notes (gaps jumped) and the <video>. ``ctx`` gives
// app.js's h(), the first segment as opened, open (openItem) and the timeline items so far.
export function view({ h, device, first, open, items, opened }) {
  const video = h("video", { id: "player", controls: true, playsinline: true, muted: true, "data-live": "1" });
  video.muted = true;
  const status = h("p", { id: "live-status" }, "Still recording: playing each segment as it arrives.");
  const notes = h("ul", { id: "live-notes", class: "bad" });
  const say = (text, bad) => { status.textContent = text; status.className = bad ? "bad" : ""; };
  const note = (text) => notes.append(h("li", {}, text));
  const player = new LiveClip({ video, device, first, open, say, note });
  window.__liveClip = player;
  const seen = (it) => {
    if (it.device !== device) return;
    if (it.kind === "segment" && (it.seq === first || it.parent === String(first))) player.offer(it.seq);
    else if (it.kind === "event") {
      Promise.resolve(open(it)).then((got) => {
        if (got.body?.type === "clip" && got.body.clip_seq === first && Array.isArray(got.body.segments)) player.finish(got.body);
      });
    }
  };
  player.offer(first);
  items.forEach(seen);
  opened.forEach((got, key) => {
    if (key.startsWith(`${device}/`) && got.body?.type === "clip" && got.body.clip_seq === first) player.finish(got.body);
  });
  const onNews = (e) => seen(e.detail);
  window.addEventListener("doorstep:stored", onNews);
  // the live channel can drop news while it reconnects, and a clip opened later may be older
  // than the timeline's first page: the store's manifests from the first seq on are asked too
  // (their kind and parent only point the way; each segment's own signed manifest decides)
  const ask = async () => {
    if (player.listed) return;
    try {
      const r = await fetch(`/api/devices/${encodeURIComponent(device)}/manifests?from=${first}&to=${first + 499}`,
        { credentials: "same-origin" });
      if (!r.ok) return;
      for (const { seq, env } of (await r.json()).manifests) {
        const m = JSON.parse(env).manifest || {};
        seen({ device, seq, kind: m.kind, parent: m.parent || "" });
      }
    } catch { /* the next round asks again */ }
  };
  ask();
  const poll = setInterval(ask, 2000);
  const leave = () => {
    player.stop(); clearInterval(poll);
    window.removeEventListener("doorstep:stored", onNews);
    window.removeEventListener("hashchange", leave);
  };
  window.addEventListener("hashchange", leave);
  return [status, notes, video];
}
