// Live view and talk over WebRTC (docs/rtc.md): this browser offers to receive the doorbell's
// video and microphone and to send its own microphone, signs the offer (with its DTLS
// fingerprint named beside it) as an `rtc_offer` command, and checks the doorbell's signed
// answer before using it. The hub only relays the two signed messages; media flows peer to
// peer, encrypted with keys neither the hub nor a TURN relay can change unnoticed.
import * as seal from "/static/js/seal.js";

const sessions = new Map();   // device -> { el, video, status, pc, id }

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

async function start(device, s, talk) {
  s.status.textContent = "Asking the doorbell…";
  // STUN only, as the doorbell's signed status names it; a TURN relay, if any, is the
  // doorbell's own (its credentials never leave it)
  const pc = new RTCPeerConnection({ iceServers: s.stun.length ? [{ urls: s.stun }] : [] });
  s.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  if (talk) {
    const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
    for (const t of mic.getAudioTracks()) pc.addTrack(t, mic);
  } else {
    pc.addTransceiver("audio", { direction: "recvonly" });
  }
  const stream = new MediaStream();
  pc.addEventListener("track", (e) => { stream.addTrack(e.track); s.video.srcObject = stream; s.video.hidden = false; });
  pc.addEventListener("connectionstatechange", () => {
    s.status.textContent = `${talk ? "Talk" : "Live"}: ${pc.connectionState}`;
    s.el.dataset.state = pc.connectionState;
  });
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const sdp = pc.localDescription.sdp;
  const { counter, ack } = await command(device, "rtc_offer", { sdp, fingerprint: fingerprint(sdp) });
  if (!ack.ok) throw new Error(`${device} refused: ${ack.reason}`);
  s.id = counter;
  // the answer's SDP (and so the doorbell's DTLS fingerprint) is inside its signed answer
  await pc.setRemoteDescription({ type: "answer", sdp: ack.data });
  s.video.play().catch(() => {});
}

async function stop(device, s) {
  const { pc, id } = s;
  s.pc = null;
  s.id = null;
  s.status.textContent = "Hanging up…";
  // the signed hang-up first, so the doorbell logs why the call ended; closed regardless
  if (id != null) {
    await Promise.race([command(device, "rtc_hangup", { session: String(id) }).catch(() => {}),
      new Promise((resolve) => setTimeout(resolve, 3000))]);
  }
  if (pc) pc.close();
  s.video.srcObject = null;
  s.video.hidden = true;           // no empty black box on the page between calls
  s.el.dataset.state = "closed";
  s.status.textContent = "Hung up.";
}

// The live controls of one doorbell: made once and kept, so a re-drawn page keeps its call.
export function controls(device, h, status = {}) {
  let s = sessions.get(device);
  if (!s) {
    s = { pc: null, id: null };
    s.video = h("video", { id: `rtc-video-${device}`, class: "rtc", autoplay: "", playsinline: "" });
    s.video.muted = false;
    s.video.hidden = true;           // shown when the doorbell's video arrives
    s.status = h("p", { id: `rtc-status-${device}`, class: "answer" });
    const go = (talk) => async () => {
      if (s.pc) await stop(device, s);
      try { await start(device, s, talk); } catch (err) {
        s.status.textContent = `${talk ? "Talk" : "Live"}: ${err.message}`;
        s.el.dataset.state = "failed";
        if (s.pc) { s.pc.close(); s.pc = null; }
      }
    };
    s.el = h("div", { class: "rtc", id: `rtc-${device}` },
      h("div", { class: "buttons" },
        h("button", { id: `rtc-live-${device}`, onclick: go(false) }, "live (WebRTC)"),
        h("button", { id: `rtc-talk-${device}`, onclick: go(true) }, "talk"),
        h("button", { id: `rtc-hangup-${device}`, onclick: () => stop(device, s) }, "hang up")),
      s.video, s.status);
    sessions.set(device, s);
  }
  s.stun = ((status.rtc || {}).stun || []).filter((u) => /^stuns?:/.test(u));
  // a video taken out of the page and put back is paused: start it again
  setTimeout(() => { if (s.video.srcObject && s.video.paused) s.video.play().catch(() => {}); }, 0);
  return s.el;
}

export function session(device) {
  return sessions.get(device) || null;
}
