// One notification for a sealed event, the same from the page (live channel) and from the
// service worker (Web Push): the visitor's picture is the thumbnail inside the sealed body.
export function describe(body) {
  const t = body.type;
  if (t === "ring") return { title: "Someone is at the door", kind: "ring" };
  if (t === "motion") return { title: "Motion", kind: "motion" };
  if (t === "snapshot") return { title: "Snapshot", kind: "snapshot" };
  if (t === "tampered") return { title: "Tampered artifact", kind: t };
  return { title: t === "unreadable" ? "Cannot open" : t, kind: t };
}

// Is this moment inside quiet hours "HH:MM-HH:MM" (the browser's local time)? The hub applies
// the same rule to Web Push (owner/hub/push.py quiet_now).
export function quietNow(quiet, date = new Date()) {
  const m = /^(\d\d):(\d\d)-(\d\d):(\d\d)$/.exec(quiet || "");
  if (!m) return false;
  const start = +m[1] * 60 + +m[2], end = +m[3] * 60 + +m[4];
  const local = date.getHours() * 60 + date.getMinutes();
  return start <= end ? start <= local && local < end : local >= start || local < end;
}

export async function notify(body, it, { motion = false } = {}) {
  const d = describe(body);
  if (d.kind !== "ring" && !(d.kind === "motion" && motion)) return false;
  const reg = self.registration || (await navigator.serviceWorker.ready);
  const picture = body.thumbnail ? "data:image/jpeg;base64," + body.thumbnail : undefined;
  await reg.showNotification(`${d.title} (${it.device})`, {
    body: new Date(body.time * 1000).toLocaleTimeString(), tag: `${it.device}/${it.seq}`,
    image: picture, icon: picture || "/static/icon-192.png", badge: "/static/icon-192.png",
    requireInteraction: d.kind === "ring", renotify: false,
    data: { open: `#event/${it.device}/${it.seq}`, pressed: body.pressed || body.time, shown: Date.now() / 1000 },
  });
  // when each notification was up, for the bench (row 10) and the tests; never sent anywhere
  (globalThis.__shown ||= []).push({ tag: `${it.device}/${it.seq}`, at: Date.now() });
  return true;
}
