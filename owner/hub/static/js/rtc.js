// Live view and talk over WebRTC (docs/rtc.md): this browser offers to receive the doorbell's
// video and microphone and to send its own microphone, signs the offer (with its DTLS
// fingerprint named beside it) as an `rtc_offer` command, and checks the doorbell's signed
// answer before using it. The hub only relays the two signed messages; media flows peer to
// peer, encrypted with keys neither the hub nor a TURN relay can change unnoticed. The live
// page (watch.js) opens it first and falls back to the broker when it does not connect.
import * as seal from "/static/js/seal.js";

const sessions = new Map();   // device -> { el, video, status, pc, id, audio, mic }

function fingerprint(sdp) {
  const m = sdp.match(/^a=fingerprint:(\S+) ([0-9A-Fa-f:]+)\s*$/m);
  if (!m) throw new Error("this browser's offer names no DTLS fingerprint");
  return `${m[1].toLowerCase()} ${m[2].toUpperCase()}`;
}

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(resolve, 5000);          // whatever was gathered by then
  });
}

async function command(device, action, params) {
  const { counter, payload } = await seal.signCommand(device, action, params);
  const r = await fetch(`/api/devices/${device}/command`, { method: "POST", body: payload,
    credentials: "same-origin", headers: { "Content-Type": "application/json" } });
  const got = await r.json();
  if (!r.ok) throw new Error(got.error);
  return { counter, ack: await seal.verifyAck(device, got.ack, counter) };
}

// Resolves once the doorbell's video flows; rejects with why not (refused, failed, or not
// connected within `connectMs` of the doorbell's answer). The microphone is not asked for:
// the audio goes both ways from the start, and talk() only puts the microphone on it.
export async function start(device, s, connectMs) {
  s.status.textContent = "Asking the doorbell…";
  s.el.dataset.state = "offering";
  // STUN only, as the doorbell's signed status names it; a TURN relay, if any, is the
  // doorbell's own (its credentials never leave it)
  const pc = new RTCPeerConnection({ iceServers: s.stun.length ? [{ urls: s.stun }] : [] });
  s.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  s.audio = pc.addTransceiver("audio", { direction: "sendrecv" });
  const stream = new MediaStream();
  let arrived;
  const video = new Promise((resolve) => { arrived = resolve; });
  pc.addEventListener("track", (e) => {
    stream.addTrack(e.track);
    s.video.srcObject = stream;
    if (e.track.kind === "video") arrived();
  });
  const failed = new Promise((_, reject) => pc.addEventListener("connectionstatechange", () => {
    s.status.textContent = `Direct: ${pc.connectionState}`;
    s.el.dataset.state = pc.connectionState;
    if (pc.connectionState === "failed") reject(new Error("the direct connection failed"));
  }));
  failed.catch(() => {});          // raced below; a failure after that is only shown
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const sdp = pc.localDescription.sdp;
  const { counter, ack } = await command(device, "rtc_offer", { sdp, fingerprint: fingerprint(sdp) });
  if (s.pc !== pc) {               // given up meanwhile (the page fell back): end it there too
    if (ack.ok) command(device, "rtc_hangup", { session: String(counter) }).catch(() => {});
    throw new Error("given up");
  }
  if (!ack.ok) throw new Error(`${device} refused: ${ack.reason}`);
  s.id = counter;
  // the answer's SDP (and so the doorbell's DTLS fingerprint) is inside its signed answer
  await pc.setRemoteDescription({ type: "answer", sdp: ack.data });
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not connected within ${connectMs / 1000} s`)), connectMs);
  });
  const connected = new Promise((resolve) => {
    const check = () => { if (pc.connectionState === "connected") resolve(); };
    pc.addEventListener("connectionstatechange", check);
    check();
  });
  try { await Promise.race([Promise.all([connected, video]), failed, late]); } finally { clearTimeout(timer); }
  s.video.hidden = false;
  s.video.play().catch(() => {});
}

// The browser's microphone on the call (true) or off it (false), without a new offer.
export async function talk(s, on) {
  if (!s.pc || !s.audio) throw new Error("no call");
  if (on && !s.mic) {
    s.mic = await navigator.mediaDevices.getUserMedia({ audio: true });
    await s.audio.sender.replaceTrack(s.mic.getAudioTracks()[0]);
  } else if (!on && s.mic) {
    await s.audio.sender.replaceTrack(null);
    for (const t of s.mic.getTracks()) t.stop();
    s.mic = null;
  }
}

export async function stop(device, s) {
  const { pc, id, mic } = s;
  s.pc = null;
  s.id = null;
  s.mic = null;
  s.audio = null;
  s.status.textContent = "Hanging up…";
  // the signed hang-up first, so the doorbell logs why the call ended; closed regardless
  if (id != null) {
    await Promise.race([command(device, "rtc_hangup", { session: String(id) }).catch(() => {}),
      new Promise((resolve) => setTimeout(resolve, 3000))]);
  }
  if (mic) for (const t of mic.getTracks()) t.stop();
  if (pc) pc.close();
  s.video.srcObject = null;
  s.video.hidden = true;           // no empty black box on the page between calls
  s.el.dataset.state = "closed";
  s.status.textContent = "Hung up.";
}

// One doorbell's call: its video and status, made once and kept.
export function session(device, h = null, status = {}) {
  let s = sessions.get(device);
  if (!s && h) {
    s = { pc: null, id: null, mic: null, audio: null, stun: [] };
    s.video = h("video", { id: `rtc-video-${device}`, class: "rtc", autoplay: "", playsinline: "" });
    s.video.muted = false;
    s.video.hidden = true;           // shown when the doorbell's video arrives
    s.status = h("p", { id: `rtc-status-${device}`, class: "answer" });
    s.el = h("div", { class: "rtc", id: `rtc-${device}` }, s.video, s.status);
    sessions.set(device, s);
  }
  if (s && h) s.stun = ((status.rtc || {}).stun || []).filter((u) => /^stuns?:/.test(u));
  return s || null;
}
