// One notification for a sealed event, the same from the page (live channel) and from the
// service worker (Web Push). The event comes first, with no picture; the visitor's picture is
// the event's own `thumbnail` artifact (parent = the event's seq), which follows it on the ring
// lane, and the notification is then shown again, silently, with it (issue 13, item 13). Events
// stored before that change carry the thumbnail inside their sealed body instead.
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

// A JPEG's bytes as a data: URL (a service worker has no object URLs); in slices, since a
// large thumbnail would pass too many arguments to String.fromCharCode at once.
export function pictureUrl(bytes) {
  const all = new Uint8Array(bytes);
  let text = "";
  for (let i = 0; i < all.length; i += 8192) text += String.fromCharCode(...all.subarray(i, i + 8192));
  return "data:image/jpeg;base64," + btoa(text);
}

// The event's notification; `picture` (a data: URL) once its thumbnail has come. Shown again
// with the same tag, it replaces the first one without a second sound (renotify: false).
export async function notify(body, it, { motion = false, picture } = {}) {
  const d = describe(body);
  if (d.kind !== "ring" && !(d.kind === "motion" && motion)) return false;
  const reg = self.registration || (await navigator.serviceWorker.ready);
  picture ||= body.thumbnail ? "data:image/jpeg;base64," + body.thumbnail : undefined;
  const tag = `${it.device}/${it.seq}`;
  await reg.showNotification(`${d.title} (${it.device})`, {
    body: new Date(body.time * 1000).toLocaleTimeString(), tag,
    image: picture, icon: picture || "/static/icon-192.png", badge: "/static/icon-192.png",
    requireInteraction: d.kind === "ring", renotify: false,
    data: { open: `#event/${it.device}/${it.seq}`, pressed: body.pressed || body.time, shown: Date.now() / 1000,
      event: body, picture: Boolean(picture) },
  });
  // when each notification was up, for the bench (row 10) and the tests; never sent anywhere
  (globalThis.__shown ||= []).push({ tag, at: Date.now(), picture: Boolean(picture) });
  return true;
}

// The thumbnail `thumb` (opened: {manifest, plain}) has come: show its event's notification
// again with the picture. `eventOf(seq)` opens the parent event when no notification of it
// is up (the picture overtook it, or it was dismissed). False if nothing was shown.
export async function addPicture(device, thumb, eventOf, { motion = false } = {}) {
  const seq = Number(thumb.manifest.parent);
  if (!Number.isSafeInteger(seq) || seq < 1) return false;
  const reg = self.registration || (await navigator.serviceWorker.ready);
  const [up] = await reg.getNotifications({ tag: `${device}/${seq}` });
  const body = up?.data?.event || (await eventOf(seq));
  return notify(body, { device, seq }, { motion, picture: pictureUrl(thumb.plain) });
}

// A visitor's voicemail (opened: {manifest, plain}, verified and decrypted): its own
// notification, which opens the message to play; the ring it answers is its signed `parent`.
export async function notifyVoicemail(device, vm) {
  const reg = self.registration || (await navigator.serviceWorker.ready);
  const { seq, parent, created } = vm.manifest;
  const tag = `${device}/voicemail/${seq}`;
  await reg.showNotification(`Voicemail from ${device}`, {
    body: `A visitor left a message at ${new Date(created * 1000).toLocaleTimeString()}: tap to play it`,
    tag, icon: "/static/icon-192.png", badge: "/static/icon-192.png", renotify: false,
    data: { open: `#voicemail/${device}/${seq}`, ring: parent || null, voicemail: true },
  });
  (globalThis.__shown ||= []).push({ tag, at: Date.now(), voicemail: true });
  return true;
}
