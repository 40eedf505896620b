// Quick replies and voicemail (docs/talk.md). The owner records a short message here
// (MediaRecorder, Opus in WebM); this browser signs a `reply_put` naming the audio's size and
// SHA-256, and the hub relays the command and the audio to the doorbell, both sealed to its
// key. `reply_play` plays a stored reply on the doorbell's speaker. A visitor's voicemail is
// an artifact like a clip: verified and decrypted here, then played.
import * as db from "/static/js/db.js";
import * as seal from "/static/js/seal.js";

const MAX_SECONDS = 30;           // the doorbell's default voice.reply_max_seconds
const MAX_BYTES = 256 * 1024;     // and its largest reply (voice.reply_max_kb)
const panels = new Map();         // device -> { el, ... }: kept, so a re-drawn page keeps a take

function base64(bytes) {          // chunked: a spread of 256 KiB of arguments would overflow
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");

async function answer(device, r, counter) {
  const got = await r.json();
  if (!r.ok) throw new Error(got.error);
  const ack = await seal.verifyAck(device, got.ack, counter);
  if (!ack.ok) throw new Error(`${device} refused: ${ack.reason}`);
  return ack;
}

async function command(device, action, params) {
  const { counter, payload } = await seal.signCommand(device, action, params);
  const r = await fetch(`/api/devices/${device}/command`, { method: "POST", body: payload,
    credentials: "same-origin", headers: { "Content-Type": "application/json" } });
  return answer(device, r, counter);
}

export async function send(device, name, label, auto, audio) {
  if (audio.length > MAX_BYTES) throw new Error(`the recording is ${audio.length} bytes; at most ${MAX_BYTES}`);
  const sha256 = hex(await crypto.subtle.digest("SHA-256", audio));
  const params = { name, label, size: String(audio.length), sha256 };
  if (auto) params.auto = "1";
  const { counter, payload } = await seal.signCommand(device, "reply_put", params);
  const r = await fetch(`/api/devices/${device}/reply`, { method: "POST",
    body: JSON.stringify({ command: payload, audio: base64(audio) }),
    credentials: "same-origin", headers: { "Content-Type": "application/json" } });
  await answer(device, r, counter);
  const known = ((await db.get(`replies/${device}`)) || []).filter((x) => x.name !== name);
  known.push({ name, label, auto });
  await db.put(`replies/${device}`, known);
}

function record(p) {
  return async () => {
    if (p.recorder) { p.recorder.stop(); return; }
    const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
    const type = MediaRecorder.isTypeSupported("audio/webm;codecs=opus") ? "audio/webm;codecs=opus" : "";
    const rec = new MediaRecorder(mic, type ? { mimeType: type, audioBitsPerSecond: 32000 } : {});
    const parts = [];
    rec.ondataavailable = (e) => { if (e.data.size) parts.push(e.data); };
    rec.onstop = async () => {
      clearTimeout(p.limit);
      mic.getTracks().forEach((t) => t.stop());
      p.recorder = null;
      p.take = new Uint8Array(await new Blob(parts).arrayBuffer());
      p.button.textContent = "record";
      p.status.textContent = `Recorded ${p.take.length} bytes.`;
      p.el.dataset.state = "recorded";
    };
    p.recorder = rec;
    rec.start();
    p.limit = setTimeout(() => rec.state === "recording" && rec.stop(), MAX_SECONDS * 1000);
    p.button.textContent = "stop";
    p.status.textContent = "Recording…";
    p.el.dataset.state = "recording";
  };
}

async function list(device, p, h) {
  const known = (await db.get(`replies/${device}`)) || [];
  p.list.replaceChildren(...known.map((x) => h("li", {},
    `${x.label || x.name}${x.auto ? " (after an unanswered ring)" : ""} `,
    h("button", { id: `reply-play-${device}-${x.name}`, onclick: act(device, p, h, "reply_play", x.name) }, "play"),
    h("button", { id: `reply-delete-${device}-${x.name}`, onclick: act(device, p, h, "reply_delete", x.name) }, "delete"))));
}

function act(device, p, h, action, name) {
  return async () => {
    p.status.textContent = action === "reply_play" ? `Playing ${name} at the door…` : `Deleting ${name}…`;
    try {
      await command(device, action, { name });
      if (action === "reply_delete") {
        await db.put(`replies/${device}`, ((await db.get(`replies/${device}`)) || []).filter((x) => x.name !== name));
        await list(device, p, h);
      }
      p.status.textContent = action === "reply_play" ? `${name} is playing at the door.` : `Deleted ${name}.`;
      p.el.dataset.state = action === "reply_play" ? "played" : "deleted";
    } catch (err) { p.status.textContent = err.message; p.el.dataset.state = "failed"; }
  };
}

// One doorbell's quick replies: record, name, send; play or delete one sent before.
export function controls(device, h) {
  let p = panels.get(device);
  if (!p) {
    p = { recorder: null, take: null };
    p.button = h("button", { id: `reply-record-${device}` }, "record");
    p.button.onclick = record(p);
    p.name = h("input", { id: `reply-name-${device}`, placeholder: "name (a-z, 0-9)", maxlength: "32",
      pattern: "[a-z0-9][a-z0-9_-]{0,31}" });
    p.label = h("input", { id: `reply-label-${device}`, placeholder: "what it says", maxlength: "80" });
    p.auto = h("input", { id: `reply-auto-${device}`, type: "checkbox" });
    p.status = h("p", { id: `reply-status-${device}`, class: "answer" });
    p.list = h("ul", { id: `reply-list-${device}` });
    const sendIt = async () => {
      if (!p.take) { p.status.textContent = "Record a reply first."; return; }
      const name = p.name.value.trim() || "reply";
      p.status.textContent = `Sending ${name}…`;
      try {
        await send(device, name, p.label.value.trim(), p.auto.checked, p.take);
        p.status.textContent = `Stored ${name} on ${device}.`;
        p.el.dataset.state = "stored";
        await list(device, p, h);
      } catch (err) { p.status.textContent = err.message; p.el.dataset.state = "failed"; }
    };
    p.el = h("div", { class: "replies", id: `replies-${device}` },
      h("h3", {}, "Quick replies"),
      h("div", { class: "buttons" }, p.button, p.name, p.label,
        h("label", {}, p.auto, " play after an unanswered ring"),
        h("button", { id: `reply-send-${device}`, onclick: sendIt }, "send")),
      p.status, p.list);
    panels.set(device, p);
  }
  list(device, p, h);
  return p.el;
}

// A visitor's voicemail: verified (the doorbell's signature, the chain hash) and decrypted
// here, then played.
export async function voicemailView(device, seq, main, h) {
  main.replaceChildren(h("p", { id: "voicemail-status" }, "Verifying and decrypting…"));
  let got;
  try { got = await seal.fetchOpen(device, seq); } catch (err) {
    main.replaceChildren(h("section", { id: "refused", class: "bad" },
      h("h2", {}, err instanceof seal.Tampered ? "Tampered: will not open" : "Cannot open"), h("p", {}, err.message)));
    return;
  }
  const audio = h("audio", { id: "voicemail-audio", controls: "",
    src: URL.createObjectURL(new Blob([got.plain], { type: "audio/ogg" })) });
  main.replaceChildren(h("section", { id: "voicemail" }, h("h2", {}, `Voicemail, ${device} seq ${seq}`),
    h("p", {}, `${new Date(got.manifest.created * 1000).toLocaleString()} · signed by the doorbell, ${got.manifest.size} bytes`),
    got.manifest.parent ? h("p", {}, h("a", { id: "voicemail-ring", href: `#event/${device}/${got.manifest.parent}` },
      "The ring it answers")) : null,
    audio));
}

// A voicemail on its ring's card (the timeline) and page: a button that verifies, decrypts
// and plays it there. The message's signed `parent` must be that ring, or it is refused. Kept
// per voicemail, so a timeline re-drawn by a new arrival keeps a message that is playing.
const inline = new Map();
export function voicemailOnRing(device, vmSeq, ringSeq, h) {
  const key = `${device}/${vmSeq}`;
  if (inline.has(key)) return inline.get(key);
  const status = h("span", { class: "vm-status" });
  const audio = h("audio", { id: `voicemail-audio-${device}-${ringSeq}`, controls: "", hidden: true });
  const play = async () => {
    button.disabled = true;
    status.textContent = "Verifying and decrypting…";
    try {
      const got = await seal.fetchOpen(device, vmSeq);
      if (got.manifest.kind !== "voicemail" || got.manifest.parent !== String(ringSeq)) {
        throw new seal.Tampered(`seq ${vmSeq} is not the doorbell's voicemail for ring ${ringSeq}`);
      }
      audio.src = URL.createObjectURL(new Blob([got.plain], { type: "audio/ogg" }));
      audio.hidden = false;
      button.hidden = true;
      status.textContent = "";
      el.dataset.state = "ready";
      await audio.play().catch(() => {});
    } catch (err) {
      status.textContent = (err instanceof seal.Tampered ? "Tampered: " : "Cannot open: ") + err.message;
      el.dataset.state = "refused";
      button.disabled = false;
    }
  };
  const button = h("button", { id: `voicemail-play-${device}-${ringSeq}`, onclick: play }, "▶ Play the voicemail");
  const el = h("div", { class: "vm-inline", "data-voicemail": vmSeq }, button, audio, status);
  inline.set(key, el);
  return el;
}

// "device/ring seq" -> the voicemail item that names that ring as its parent (the hub's
// listing; the signed parent is checked when it is opened).
export function voicemailsByRing(items) {
  return new Map(items.filter((i) => i.kind === "voicemail" && i.parent).map((i) => [`${i.device}/${i.parent}`, i]));
}

export { notifyVoicemail } from "/static/js/notify.js";
