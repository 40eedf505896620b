// The live page, #live/<device> (docs/app.md, "One Live button"): one way in for the
// homeowner. It tries the direct path first (WebRTC, rtc.js: a fraction of a second
// behind, and Talk), and falls back to the broker (live.js: works from anywhere the broker
// is reachable, up to a second behind, no talk) when the doorbell refuses it, the browser has
// no WebRTC, or it does not connect within CONNECT_MS. The path in use is named on the page,
// and the homeowner can switch. #live/<device>/broker goes straight to the broker.
import * as rtc from "/static/js/rtc.js";
import { liveView } from "/static/js/live.js";

const CONNECT_MS = 5000;   // from the doorbell's answer; then the broker instead
const TOTAL_MS = 12000;    // from the click, the answer included

const DIRECT = "Direct (WebRTC): a fraction of a second behind; Talk sends your voice to the door.";
const BROKER = "Through the broker: up to a second behind; no talk on this path.";

export async function watchView(device, root, h, { via = "" } = {}) {
  let status = {};
  try {
    const doc = await (await fetch("/api/devices", { credentials: "same-origin" })).json();
    status = (doc.devices || []).find((d) => d.id === device)?.status || {};
  } catch { status = {}; }
  const s = rtc.session(device, h, status);
  const path = h("p", { id: "live-path", class: "path" }, "Connecting…");
  const note = h("p", { id: "live-why", class: "answer" });
  const body = h("div", { id: "live-body" });
  const talk = h("button", { id: "live-talk", hidden: true, "aria-pressed": "false" }, "Talk");
  const other = h("button", { id: "live-switch", hidden: true });
  const hangup = h("button", { id: "live-hangup", hidden: true }, "Stop");
  const section = h("section", { id: "watch", "data-path": "connecting" },
    h("h2", {}, `${device}, live`), path, h("div", { class: "buttons" }, talk, hangup, other), note, body);
  root.replaceChildren(section);
  let left = false;
  const leave = () => {
    left = true;
    window.removeEventListener("hashchange", leave);
    if (s.pc) rtc.stop(device, s);
  };
  window.addEventListener("hashchange", leave);

  const broker = (why) => {
    section.dataset.path = "broker";
    path.textContent = BROKER;
    note.textContent = why;
    talk.hidden = true;
    hangup.hidden = true;
    other.hidden = false;
    other.textContent = "Try direct again";
    other.onclick = () => { location.hash = `#live/${device}/retry-${Date.now()}`; };
    liveView(device, body, h);       // its own Stop; leaving the page stops it
  };
  if (via === "broker") return broker("You chose the broker.");
  if (!window.RTCPeerConnection) return broker("This browser has no WebRTC.");

  section.dataset.path = "trying";
  path.textContent = "Connecting directly (WebRTC)…";
  body.replaceChildren(s.el);
  if (s.pc) await rtc.stop(device, s);
  let timer;
  const connectMs = window.__rtcConnectMs || CONNECT_MS;
  const total = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${TOTAL_MS / 1000} s`)), TOTAL_MS);
  });
  const attempt = rtc.start(device, s, connectMs);
  attempt.catch(() => {});         // raced below; if it fails after the race, nothing is left to do
  try {
    await Promise.race([attempt, total]);
  } catch (err) {
    if (left) return;
    await rtc.stop(device, s);
    return broker(`The direct connection did not work (${err.message}), so this is through the broker.`);
  } finally { clearTimeout(timer); }
  if (left) { rtc.stop(device, s); return; }
  section.dataset.path = "webrtc";
  path.textContent = DIRECT;
  talk.hidden = false;
  hangup.hidden = false;
  other.hidden = false;
  other.textContent = "Use the broker instead";
  other.onclick = async () => { await rtc.stop(device, s); location.hash = `#live/${device}/broker`; };
  hangup.onclick = async () => {
    talk.hidden = true;
    hangup.hidden = true;
    await rtc.stop(device, s);
    path.textContent = "Stopped.";
    section.dataset.path = "stopped";
  };
  talk.onclick = async () => {
    const on = talk.getAttribute("aria-pressed") !== "true";
    try {
      await rtc.talk(s, on);
      talk.setAttribute("aria-pressed", String(on));
      talk.textContent = on ? "Talking: tap to stop" : "Talk";
      talk.classList.toggle("on", on);
      note.textContent = on ? "Your microphone is on: the visitor hears you." : "";
    } catch (err) { note.textContent = `Talk: ${err.message}`; }
  };
}
