// The household's app: enrolment, the timeline, the player, snapshots, the doorbells' page,
// commands, sharing and notification settings. Every artifact is verified and decrypted here
// (seal.js); the hub only ever hands over ciphertext and signed manifests.
import * as db from "/static/js/db.js";
import * as seal from "/static/js/seal.js";
import * as segments from "/static/js/segments.js";
import * as liveclip from "/static/js/liveclip.js";
import * as shareclip from "/static/js/shareclip.js";
import * as replies from "/static/js/replies.js";
import { watchView } from "/static/js/watch.js";
import { addPicture, notify, describe, pictureUrl, quietNow } from "/static/js/notify.js";

const $ = (sel) => document.querySelector(sel);
const main = () => $("#main");
const opened = new Map();          // "device/seq" -> {manifest, body|blob} or {error}
let items = [], next = null, devices = [];

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c);
  return el;
}

async function api(path, options = {}) {
  const r = await fetch(path, { credentials: "same-origin", ...options });
  const doc = r.headers.get("content-type")?.includes("json") ? await r.json() : {};
  if (!r.ok) throw Object.assign(new Error(doc.error || `${path}: ${r.status}`), { status: r.status });
  return doc;
}
const post = (path, doc) => api(path, { method: "POST", headers: { "Content-Type": "application/json" },
  body: JSON.stringify(doc) });

// -- enrolment and sign-in --------------------------------------------------------------------
async function enrolView() {
  const code = new URLSearchParams(location.hash.slice(1)).get("enrol") || "";
  const status = h("p", { id: "enrol-status" });
  const form = h("form", { id: "enrol-form", onsubmit: async (e) => {
    e.preventDefault();
    status.textContent = "Making this browser's keys…";
    try {
      const keys = await seal.makeKeys();
      const doc = await post("/api/enrol", { code: form.code.value, label: form.label.value,
        recipient: keys.recipient, key: keys.key });
      await db.put("me", { id: doc.browser.id, label: doc.browser.label, age: keys.age, sign: keys.sign,
        recipient: keys.recipient, key: keys.key, devices: doc.devices, vapid: doc.vapid });
      status.textContent = "Enrolled.";
      history.replaceState(null, "", "/#timeline");
      subscribePush(doc.vapid).then((how) => { window.__push = how; });
      start();
    } catch (err) { status.textContent = `Refused: ${err.message}`; status.className = "bad"; }
  } },
    h("h2", {}, "Add this browser to the household"),
    h("p", {}, "Run ", h("code", {}, "doorstep enroll"), " on the owner's computer and type the code it shows. ",
      "This browser makes its own keys; they never leave it."),
    h("label", {}, "Code ", h("input", { name: "code", id: "code", value: code, autocomplete: "off", required: true })),
    h("label", {}, "Name for this browser ", h("input", { name: "label", id: "label", value: "phone" })),
    h("button", { id: "enrol", type: "submit" }, "Enrol"), status);
  main().replaceChildren(form);
}

async function signIn(me) {
  const { nonce } = await post("/api/session/challenge", {});
  await post("/api/session", { browser: me.id, nonce, sig: await seal.signSession(nonce) });
}

export async function subscribePush(vapid) {
  try {
    const reg = await navigator.serviceWorker.ready;
    if ((await Notification.requestPermission()) !== "granted") return "notifications are blocked";
    const sub = await reg.pushManager.subscribe({ userVisibleOnly: true,
      applicationServerKey: seal.unb64(vapid.replace(/-/g, "+").replace(/_/g, "/")) });
    await post("/api/notifications", { subscription: sub.toJSON() });
    return "on";
  } catch (err) { return `push is not available here (${err.message}); rings still show while the app is open`; }
}

// -- the timeline -----------------------------------------------------------------------------
async function openItem(it) {
  const key = `${it.device}/${it.seq}`;
  if (!opened.has(key)) {
    try {
      const { manifest, plain, cutShort } = await seal.fetchOpen(it.device, it.seq);
      opened.set(key, manifest.kind === "event" ? { manifest, body: JSON.parse(new TextDecoder().decode(plain)) }
        : manifest.kind === "thumbnail" ? { manifest, plain, picture: pictureUrl(plain) }
        : { manifest, cutShort, blob: new Blob([plain], { type: { snapshot: "image/jpeg", voicemail: "audio/ogg" }[manifest.kind] || "video/mp4" }) });
    } catch (err) { opened.set(key, { error: err, tampered: err instanceof seal.Tampered }); }
  }
  return opened.get(key);
}

async function loadMore() {
  const doc = await api("/api/timeline?limit=60" + (next ? `&before=${encodeURIComponent(next)}` : ""));
  items = items.concat(doc.items);
  next = doc.next;
  await Promise.all(items.filter((i) => i.kind === "event" || i.kind === "thumbnail").map(openItem));
}

// An event's picture (a data: URL): its own thumbnail artifact, or, for an event stored before
// pictures travelled apart, the thumbnail inside its body.
// "device/parent" -> its thumbnail's item, rebuilt when items grow (they only ever grow): a
// clip card asks for the picture of every event near it, so a scan per call was quadratic.
let thumbs = { n: -1, by: new Map() };
function pictureOf(device, seq, body) {
  if (thumbs.n !== items.length) {
    thumbs = { n: items.length, by: new Map(items.filter((i) => i.kind === "thumbnail")
      .map((i) => [`${i.device}/${i.parent}`, i])) };
  }
  const t = thumbs.by.get(`${device}/${seq}`);
  const got = t && opened.get(`${device}/${t.seq}`);
  // the parent the doorbell signed, not the hub's listing of it
  if (got?.picture && got.manifest.parent === String(seq)) return got.picture;
  return body?.thumbnail ? "data:image/jpeg;base64," + body.thumbnail : null;
}

function cards() {
  const out = [];
  const rings = new Set(), vm = replies.voicemailsByRing(items);
  for (const it of items) {
    const got = opened.get(`${it.device}/${it.seq}`);
    if (it.kind === "event") {
      if (got?.error) { out.push({ it, type: got.tampered ? "tampered" : "unreadable", got }); continue; }
      const body = got?.body;
      if (!body || body.type === "motion_end") continue;
      if (body.type === "ring") rings.add(`${it.device}/${it.seq}`);
      out.push({ it, type: body.type, body, voicemail: body.type === "ring" ? vm.get(`${it.device}/${it.seq}`) : null });
    } else if (it.kind === "clip" || it.kind === "clip_partial" || (it.kind === "segment" && !it.parent)) {
      // a whole clip, or the first segment of one (issue 15): shown as a clip until its
      // clip event comes, which then stands for it
      if (!items.some((e) => e.device === it.device && opened.get(`${e.device}/${e.seq}`)?.body?.clip_seq === it.seq)) {
        out.push({ it, type: "clip", body: null, cutShort: it.kind === "clip_partial" });
      }
    } else if (it.kind === "voicemail") out.push({ it, type: "voicemail", body: null });
  }
  // a voicemail is shown on the ring it answers (its signed parent), if that ring is listed
  return out.filter((c) => c.type !== "voicemail" || !rings.has(`${c.it.device}/${c.it.parent}`));
}

// A clip's picture: the thumbnail of the ring or motion event that started it (its trigger
// time), else of an event during it, else of the latest event before it (a clip split from a
// long recording); a clip whose event has not arrived yet is placed by its artifact's time.
function thumbFor(card) {
  if (card.type !== "clip") return pictureOf(card.it.device, card.it.seq, card.body);
  const b = card.body;
  const end = b ? b.start_wall + b.duration : card.it.created;
  const start = b ? b.start_wall : end - 130;
  let best = null, score = Infinity;
  for (const e of items) {
    const ev = opened.get(`${e.device}/${e.seq}`)?.body;
    const picture = ev && e.device === card.it.device && ev.time <= end + 1 && pictureOf(e.device, e.seq, ev);
    if (!picture) continue;
    const s = b && Math.abs(ev.time - b.trigger_wall) <= 1 ? 0
      : ev.time >= start - 1 ? 1 + (ev.time - start) / 1e6 : 2 + (start - ev.time);
    if (s < score && s < 2 + 600) { best = picture; score = s; }
  }
  return best;
}

const day = (t) => new Date(t * 1000).toLocaleDateString(undefined, { weekday: "long", day: "numeric", month: "long" });
const clock = (t) => new Date(t * 1000).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });

function cardView(card) {
  const { it, type, body } = card;
  const thumb = thumbFor(card);
  const target = type === "clip" ? `#clip/${it.device}/${body ? body.clip_seq : it.seq}` :
    type === "voicemail" ? `#voicemail/${it.device}/${it.seq}` : `#event/${it.device}/${it.seq}`;
  const title = type === "voicemail" ? "Voicemail" : type === "clip" ? (card.cutShort ? "Clip, cut short" : `Clip, ${body ? body.duration.toFixed(1) + " s" : "details pending"}`) :
    describe(body || { type }).title;
  const a = h("a", { class: `card ${type}`, href: target, "data-kind": type, "data-seq": it.seq, "data-device": it.device },
    thumb ? h("img", { src: thumb, alt: "" }) : h("div", { class: "noimg" }, type === "tampered" ? "⚠" : "▶"),
    h("div", {}, h("strong", {}, title), h("span", {}, `${it.device} · ${clock(body?.time || it.created)}`),
      type === "tampered" ? h("em", { class: "bad" }, "tampered: " + card.got.error.message) : null));
  return card.voicemail ? h("div", { class: "card-group" }, a, replies.voicemailOnRing(it.device, card.voicemail.seq, it.seq, h)) : a;
}

async function timelineView() {
  if (!items.length) await loadMore();
  const groups = new Map();
  for (const c of cards()) {
    const d = day(c.body?.time || c.it.created);
    if (!groups.has(d)) groups.set(d, []);
    groups.get(d).push(c);
  }
  main().replaceChildren(h("section", { id: "timeline" },
    groups.size ? null : h("p", {}, "Nothing recorded yet."),
    [...groups].map(([d, cs]) => h("div", { class: "day" }, h("h2", {}, d), h("div", { class: "cards" }, cs.map(cardView)))),
    next ? h("button", { onclick: async () => { await loadMore(); timelineView(); } }, "Older") : null));
}

// -- one event, a clip, a snapshot ------------------------------------------------------------
async function eventView(device, seq) {
  const it = items.find((i) => i.device === device && i.seq === seq) || { device, seq, kind: "event" };
  const got = await openItem(it);
  if (got.error) return refusedView(got);
  const body = got.body, d = describe(body), picture = pictureOf(device, seq, body);
  const snap = items.find((i) => i.device === device && i.kind === "snapshot" && i.parent === String(seq));
  const clipEvent = items.map((e) => opened.get(`${e.device}/${e.seq}`)?.body).find((b) => b?.type === "clip" &&
    b.start_wall <= body.time + 1 && body.time <= b.start_wall + b.duration + 1);
  const vm = body.type === "ring" && replies.voicemailsByRing(items).get(`${device}/${seq}`);
  main().replaceChildren(h("section", { id: "event" }, h("h2", {}, d.title),
    h("p", {}, `${device} · ${new Date(body.time * 1000).toLocaleString()} · seq ${seq} · signed by the doorbell`),
    picture ? h("img", { class: "big", src: picture, alt: "thumbnail" }) : null,
    h("p", {}, snap ? h("a", { href: `#snapshot/${device}/${snap.seq}`, id: "open-snapshot" }, "Full snapshot") : null, " ",
      clipEvent ? h("a", { href: `#clip/${device}/${clipEvent.clip_seq}`, id: "open-clip" }, "Play the clip") : null),
    vm ? replies.voicemailOnRing(device, vm.seq, seq, h) : null));
}

function refusedView(got) {
  main().replaceChildren(h("section", { id: "refused", class: "bad" },
    h("h2", {}, got.tampered ? "Tampered: will not open" : "Cannot open"), h("p", {}, got.error.message)));
}

async function snapshotView(device, seq) {
  main().replaceChildren(h("p", {}, "Verifying and decrypting…"));
  const got = await openItem({ device, seq, kind: "snapshot" });
  if (got.error) return refusedView(got);
  main().replaceChildren(h("section", { id: "snapshot" }, h("h2", {}, `Snapshot, ${device} seq ${seq}`),
    h("img", { id: "snapshot-img", class: "full", src: URL.createObjectURL(got.blob), alt: "snapshot" })));
}

async function clipView(device, seq) {
  main().replaceChildren(h("p", { id: "clip-status" }, "Verifying and decrypting…"));
  window.__tapped = performance.now();
  let got = await openItem({ device, seq, kind: "clip" });
  if (got.error) return refusedView(got);
  let parts = null;
  if (got.manifest.kind === "segment") {
    // a clip stored as segments: every one verified and decrypted here, then joined
    const event = items.filter((e) => e.device === device)
      .map((e) => opened.get(`${e.device}/${e.seq}`)?.body)
      .find((b) => b?.type === "clip" && b.clip_seq === seq);
    // still recording, or recorded but its last segments still on their way up
    if (window.MediaSource && (!event || !(await segments.allStored(device, event.segments || [])))) {
      return liveClipView(device, seq);
    }
    const seqs = segments.segmentSeqs(seq, event, items, device);
    const each = await Promise.all(seqs.map((n) => openItem({ device, seq: n, kind: "segment" })));
    const bad = each.find((g) => g.error);
    if (bad) return refusedView(bad);
    try {
      const plains = await Promise.all(each.map(async (g) => new Uint8Array(await g.blob.arrayBuffer())));
      got = { ...got, blob: segments.join(plains) };
    } catch (err) { return refusedView({ error: err, tampered: true }); }
    const eventAt = items.find((e) => e.device === device && opened.get(`${e.device}/${e.seq}`)?.body === event);
    parts = { count: seqs.length, recording: !event, seqs, eventSeq: eventAt?.seq ?? null };
  }
  const video = h("video", { id: "player", controls: true, playsinline: true, muted: true });
  video.muted = true;
  video.src = URL.createObjectURL(got.blob);
  video.addEventListener("loadeddata", () => { window.__firstFrame = performance.now() - window.__tapped; }, { once: true });
  const to = h("input", { id: "share-to", placeholder: "age1…", size: 64 });
  const note = h("input", { id: "share-note", placeholder: "why, for whom" });
  const result = h("p", { id: "share-result" });
  const share = async () => {
    try {
      // a clip of segments: all of them and its clip event, each with its proof, in one bundle
      const copy = parts ? await shareclip.bundle(device, seq, parts.seqs, parts.eventSeq, to.value.trim())
        : await seal.rewrap(await seal.fetchBytes(`/api/a/${device}/${seq}.age`), to.value.trim());
      const q = new URLSearchParams({ device, seq, to: to.value.trim(), note: note.value });
      const r = await fetch((parts ? "/api/shares/clip?" : "/api/shares?") + q, { method: "POST", body: copy, credentials: "same-origin",
        headers: { "Content-Type": "application/octet-stream" } });
      const doc = await r.json();
      if (!r.ok) throw new Error(doc.error);
      result.replaceChildren("Shared. Audit line: ", h("code", { id: "audit-line" }, JSON.stringify(doc.share)), " ",
        h("a", { href: doc.url, download: doc.share.shared }, "download the copy"),
        ...(doc.proof ? [" and ", h("a", { id: "share-proof", href: doc.proof, download: doc.proof.split("/").pop() },
          "its proof"), " (give both: `doorstep verify-share` checks the doorbell made it)"] : []));
    } catch (err) { result.textContent = "Share refused: " + err.message; }
  };
  main().replaceChildren(h("section", { id: "clip" }, h("h2", {}, `Clip, ${device} seq ${seq}`),
    got.cutShort ? h("p", { id: "cut-short", class: "bad" }, "Cut short: the doorbell stopped while recording " +
      "(a crash or power loss). This is what it had sealed; the end is missing.") : null,
    h("p", {}, `verified: signed by ${device}, ${got.manifest.size} bytes, chain hash ${got.manifest.hash.slice(0, 12)}…`),
    parts ? h("p", { id: "segments" }, `${parts.count} segment(s), each signed and verified` +
      (parts.recording ? "; still recording: open it again for the rest" : "")) : null,
    video, h("h3", {}, "Share this clip with one person"),
    h("p", {}, parts ? "Every segment of this clip is re-wrapped for their age key, in one file with the doorbell's " +
      "signed manifests (`doorstep verify-share` checks and joins it); the hub keeps the audit line."
      : "Only this clip is re-wrapped for their age key, with a proof file (the doorbell's signed manifest) " +
        "that `doorstep verify-share` checks; the hub keeps the audit line."),
    to, note, h("button", { id: "share", onclick: share }, "Share"), result));
}

// A clip of segments that is still recording, or whose last segments are still on their way
// up: played as its segments arrive (liveclip.js).
function liveClipView(device, seq) {
  const [status, notes, video] = liveclip.view({ h, device, first: seq, open: openItem, items, opened });
  video.addEventListener("loadeddata", () => { window.__firstFrame = performance.now() - window.__tapped; }, { once: true });
  main().replaceChildren(h("section", { id: "clip" }, h("h2", {}, `Clip, ${device} seq ${seq}`),
    h("p", {}, `${device}'s clip, stored as segments: each is signed, verified and decrypted here before it plays`),
    status, notes, video, h("p", { id: "no-share" }, "It can be shared once it has finished recording and all its segments are here.")));
}

// -- the doorbells ----------------------------------------------------------------------------
// What the page knows of a doorbell's modes: its last status says (armed, privacy), or nothing.
function modes(d, s) {
  if (typeof s.armed !== "boolean") {
    return d.last_seen ? "not in its last status" : "unknown: not seen online since the hub started";
  }
  const now = `${s.armed ? "armed" : "disarmed"}${s.privacy ? ", privacy on" : ""}`;
  return d.online ? now : `${now} when last seen`;
}

// The whole chain, checked here: every signed manifest from seq 1, 500 at a time, each link
// to the one before. What was checked is remembered (the last seq and its hash, and the
// problems found), so the next visit checks only what is new.
const checking = new Map(), answers = new Map();
async function checkWholeChain(d, show) {
  if (checking.has(d.id)) return checking.get(d.id);
  const run = (async () => {
    const saved = (await db.get(`chain/${d.id}`)) || { seq: 0, hash: "", checked: 0, problems: [] };
    let { seq: last, hash: lastHash, checked } = saved;
    const problems = [...saved.problems];
    const gap = (a, b) => problems.push(a === b ? `missing seq ${a}` : `missing seq ${a}-${b}`);
    for (let from = last + 1; from <= d.chain.last_seq; from += 500) {
      const to = Math.min(from + 499, d.chain.last_seq);
      const page = await api(`/api/devices/${d.id}/manifests?from=${from}&to=${to}`);
      for (const { seq, env } of page.manifests) {
        let m;
        try { m = await seal.verifyEnvelope(d.id, new TextEncoder().encode(env)); }
        catch (e) { problems.push(`seq ${seq}: ${e.message}`); last = seq; lastHash = ""; continue; }
        if (seq > last + 1) gap(last + 1, seq - 1);
        else if (lastHash && m.prev !== lastHash) problems.push(`seq ${seq}: does not link to seq ${seq - 1} (fork or forgery)`);
        else if (seq === 1 && m.prev !== "") problems.push("seq 1: links to something before it");
        last = seq; lastHash = m.hash; checked += 1;
      }
      if (page.manifests.length === 0 || last < to) { gap(last + 1, to); last = to; lastHash = ""; }
      show({ checked, last, problems, done: false });
    }
    const result = { seq: last, hash: lastHash, checked, problems: problems.slice(0, 50) };
    await db.put(`chain/${d.id}`, result);
    return result;
  })().finally(() => checking.delete(d.id));
  checking.set(d.id, run);
  return run;
}

function chainText(d, c) {
  const forks = d.chain.forks.length ? `forks at seq ${d.chain.forks.join(", ")} (conflicting signed manifests)` : "no forks";
  const where = `${d.chain.artifacts} artifacts to seq ${d.chain.last_seq}`;
  if (!c.done) return `${where}; ${forks}; checking the whole chain here: ${c.checked} signatures and links so far…`;
  return `${where}; ${forks}; this browser checked all ${c.checked} signatures and links from seq 1: ` +
    (c.problems.length ? c.problems.join("; ") : "no gaps, all good");
}

async function devicesView() {
  const doc = await api("/api/devices");
  devices = doc.devices;
  const rows = await Promise.all(devices.map(async (d) => {
    const s = d.status || {}, health = s.health || {};
    const chainEl = h("dd", { id: `chain-${d.id}`, class: d.chain.forks.length ? "bad" : "" });
    const show = (c) => {
      chainEl.textContent = chainText(d, c);
      chainEl.className = d.chain.forks.length || c.problems.length ? "bad" : c.done ? "good" : "";
      chainEl.dataset.done = c.done ? "1" : "";
    };
    show({ checked: 0, problems: [], done: false });
    checkWholeChain(d, show).then((r) => show({ ...r, done: true }))
      .catch((e) => { chainEl.textContent = `the chain could not be checked: ${e.message}`; chainEl.className = "bad"; });
    // kept across re-renders (each status re-draws the page), so an answer on its way lands
    if (!answers.has(d.id)) answers.set(d.id, h("p", { class: "answer", id: `answer-${d.id}` }));
    const answer = answers.get(d.id);
    const send = (action) => async () => {
      answer.textContent = `Sending ${action}…`;
      try {
        const { counter, payload } = await seal.signCommand(d.id, action);
        const r = await fetch(`/api/devices/${d.id}/command`, { method: "POST", body: payload, credentials: "same-origin",
          headers: { "Content-Type": "application/json" } });
        const got = await r.json();
        if (!r.ok) throw new Error(got.error);
        const ack = await seal.verifyAck(d.id, got.ack, counter);
        answer.textContent = ack.ok ? `${d.id} did ${action} (signed answer)` : `${d.id} refused ${action}: ${ack.reason}`;
        answer.className = ack.ok ? "answer good" : "answer bad";
      } catch (err) { answer.textContent = `${action}: ${err.message}`; answer.className = "answer bad"; }
    };
    return h("article", { class: "device", id: `device-${d.id}` },
      h("h2", {}, d.id, " ", h("span", { class: d.online ? "good" : "bad" }, d.online ? "online" : "offline")),
      h("dl", {},
        h("dt", {}, "last seen"), h("dd", {}, d.last_seen ? new Date(d.last_seen * 1000).toLocaleString() : "never"),
        h("dt", {}, "temperature"), h("dd", {}, health.cpu_temp_c != null ? `${health.cpu_temp_c} °C` : "not reported"),
        h("dt", {}, "disk"), h("dd", {}, health.disk_used_percent != null ? `${health.disk_used_percent}% used` : "not reported"),
        h("dt", {}, "outbox"), h("dd", {}, s.outbox ? `${s.outbox.depth} waiting (${s.outbox.bytes} bytes)` : "not reported"),
        h("dt", {}, "modes"), h("dd", { id: `modes-${d.id}` }, modes(d, s)),
        h("dt", {}, "chain"), chainEl),
      h("div", { class: "buttons" }, ["arm", "disarm", "privacy_on", "privacy_off", "snapshot"].map((a) =>
        h("button", { id: `cmd-${d.id}-${a}`, onclick: send(a) }, a.replace("_", " "))),
        // one Live button: direct (WebRTC, with Talk) when it connects, else the broker (watch.js)
        h("button", { id: `live-${d.id}`, class: "live", title: "See and talk to the door: direct when possible, " +
          "through the broker otherwise", onclick: () => { location.hash = `#live/${d.id}`; } }, "▶ Live")), answer,
      replies.controls(d.id, h));
  }));
  main().replaceChildren(h("section", { id: "devices" }, rows.length ? rows : h("p", {}, "No doorbells yet.")));
}

// -- settings ---------------------------------------------------------------------------------
async function settingsView() {
  const me = await api("/api/me"), audit = await api("/api/shares");
  const mine = me.browser, status = h("p", { id: "settings-status" });
  const quiet = h("input", { id: "quiet", value: mine.quiet, placeholder: "22:00-07:00" });
  const motion = Object.keys(me.devices).map((d) => h("label", {}, h("input", { type: "checkbox", class: "motion",
    value: d, checked: mine.motion.includes(d) }), ` motion at ${d}`));
  const key = h("textarea", { id: "owner-key", rows: 3, cols: 70, placeholder: "AGE-SECRET-KEY-1… (the owner's owner.key)" });
  main().replaceChildren(h("section", { id: "settings" },
    h("h2", {}, "This browser"), h("p", {}, `${mine.label} (${mine.id}), age recipient `, h("code", {}, mine.recipient)),
    h("p", {}, "Doorbells sealing for it: ", Object.entries(mine.devices).map(([d, a]) => `${d}: ${a}`).join(", ") || "waiting for `doorstep enroll`"),
    h("h2", {}, "Notifications"), h("p", {}, `Rings: ${mine.push ? "push on" : "while the app is open"} `,
      h("button", { onclick: async () => { status.textContent = await subscribePush(me.vapid); } }, "Turn on push")),
    motion, h("label", {}, " Quiet hours ", quiet),
    h("button", { id: "save-notifications", onclick: async () => {
      const doc = await post("/api/notifications", { motion: [...document.querySelectorAll(".motion:checked")].map((c) => c.value),
        quiet: quiet.value, tz_offset: -new Date().getTimezoneOffset() });
      await db.put("me", { ...(await db.get("me")), motion: doc.browser.motion, quiet: doc.browser.quiet });
      status.textContent = "Saved.";
    } }, "Save"), status,
    h("h2", {}, "Import the owner's key"), h("p", {}, "Opens everything sealed to owner.key, including what was recorded before this browser was enrolled. It is kept non-extractable."),
    key, h("button", { id: "import-key", onclick: async () => {
      try {
        const id = await seal.importIdentity(key.value);
        key.value = "";
        await db.put("identities", [...((await db.get("identities")) || []), id]);
        opened.clear();
        status.textContent = `Imported ${id.recipient}.`;
      } catch (err) { status.textContent = err.message; }
    } }, "Import"),
    h("h2", {}, "Household"), h("ul", {}, me.household.map((b) => h("li", {}, `${b.label} (${b.id}) ${b.recipient.slice(0, 16)}…`))),
    h("h2", {}, "Shares"), h("ul", { id: "audit" }, audit.audit.map((a) => h("li", {},
      `${new Date(a.time * 1000).toLocaleString()}: ${a.source} to ${a.recipient.slice(0, 16)}… ${a.note}`)))));
}

// -- routing, the live channel ----------------------------------------------------------------
async function route() {
  const [view, device, seq] = location.hash.slice(1).split("/");
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("on", a.hash === "#" + view));
  try {
    if (view === "event") await eventView(device, Number(seq));
    else if (view === "clip") await clipView(device, Number(seq));
    else if (view === "snapshot") await snapshotView(device, Number(seq));
    else if (view === "voicemail") await replies.voicemailView(device, Number(seq), main(), h);
    else if (view === "devices") await devicesView();
    else if (view === "live") await watchView(device, main(), h, { via: seq });
    else if (view === "settings") await settingsView();
    else await timelineView();
  } catch (err) { main().replaceChildren(h("p", { class: "bad" }, err.message)); }
}

function listen() {
  const live = new EventSource("/api/live");
  live.addEventListener("stored", async (e) => {
    const it = JSON.parse(e.data);
    (window.__news ||= {})[`${it.device}/${it.seq}`] = Date.now();   // for the bench (row 10)
    if (items.some((i) => i.device === it.device && i.seq === it.seq)) return;
    items.unshift(it);
    items.sort((a, b) => b.created - a.created || b.seq - a.seq);
    if (it.kind === "event" || it.kind === "thumbnail") {
      const got = await openItem(it);
      const me = await db.get("me");
      const motion = (me.motion || []).includes(it.device) && !quietNow(me.quiet);
      if (got.body) await notify(got.body, it, { motion, picture: pictureOf(it.device, it.seq, got.body) });
      else if (got.picture) {
        // the visitor's picture, a moment after the ring: into its notification, silently
        await addPicture(it.device, got, async (parent) => (await openItem({ device: it.device, seq: parent, kind: "event" })).body,
          { motion }).catch(() => false);
      }
      if (got.picture && location.hash === `#event/${it.device}/${got.manifest.parent}`) route();
    }
    if (it.kind === "voicemail") {
      const got = await openItem(it);
      if (!got.error) await replies.notifyVoicemail(it.device, got).catch(() => false);
    }
    window.dispatchEvent(new CustomEvent("doorstep:stored", { detail: it }));   // a clip playing as it records
    if (["", "#timeline"].includes(location.hash)) timelineView();
  });
  live.addEventListener("status", () => { if (location.hash === "#devices") devicesView(); });
  window.__live = live;
}

async function start() {
  const me = await db.get("me");
  if (!me) return enrolView();
  try { await api("/api/me"); } catch (err) {
    if (err.status !== 401) throw err;
    try { await signIn(me); } catch { return enrolView(); }
  }
  const now = await api("/api/me");
  await db.put("me", { ...me, devices: { ...now.devices, ...me.devices }, motion: now.browser.motion,
    quiet: now.browser.quiet });
  $("nav").hidden = false;
  listen();
  window.addEventListener("hashchange", route);
  navigator.serviceWorker.addEventListener("message", (e) => { if (e.data?.open) location.hash = e.data.open; });
  await route();
  document.body.dataset.ready = "1";
}

navigator.serviceWorker.register("/sw.js", { type: "module", scope: "/" }).catch(() => {});
if (location.hash.startsWith("#enrol=")) db.get("me").then((me) => (me ? start() : enrolView()));
else start();
