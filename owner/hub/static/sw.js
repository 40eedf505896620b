// The service worker: Web Push while the app is closed. The push service carried RFC 8291
// ciphertext; inside is the doorbell's sealed event (or which one to fetch, sealed, from the
// hub). It is verified and decrypted here, with the keys in IndexedDB, and shown with the
// visitor's picture. Tapping it opens the event.
import * as seal from "/static/js/seal.js";
import { addPicture, notify, notifyVoicemail } from "/static/js/notify.js";

// Every module of the app is in the shell: one missing (segments.js, live.js, rtc.js were) and
// the app cannot start offline, since app.js imports them all; so are the vendored age modules
// they import.
const CACHE = "shell-v2";
const SHELL = ["/", "/static/app.css", "/manifest.webmanifest", "/static/icon-192.png",
  ...["app", "db", "live", "liveclip", "notify", "replies", "rtc", "seal", "segments", "shareclip", "watch"].map(
    (m) => `/static/js/${m}.js`)];

async function precache() {
  const cache = await caches.open(CACHE);
  await cache.addAll(SHELL);
  // the vendored age modules, by the list that pins them (vendor/SHA256SUMS)
  const sums = await (await fetch("/static/vendor/SHA256SUMS")).text();
  const files = sums.split("\n").map((line) => line.trim().split(/\s+/)[1]).filter((f) => f?.endsWith(".js"));
  await cache.addAll(files.map((f) => `/static/vendor/${f}`));
}

self.addEventListener("install", (e) => e.waitUntil(precache().then(() => self.skipWaiting())));
self.addEventListener("activate", (e) => e.waitUntil((async () => {
  for (const name of await caches.keys()) if (name !== CACHE) await caches.delete(name);
  await self.clients.claim();
})()));

// The app's shell from the network first, from the cache when the hub is unreachable; each
// fresh copy replaces the cached one. The API (ciphertext, sessions) is never cached here.
self.addEventListener("fetch", (e) => {
  const url = new URL(e.request.url);
  if (e.request.method !== "GET" || url.origin !== location.origin || url.pathname.startsWith("/api/")) return;
  e.respondWith(fetch(e.request).then((r) => {
    if (r.ok) {
      const copy = r.clone();
      e.waitUntil(caches.open(CACHE).then((c) => c.put(e.request, copy)));
    }
    return r;
  }).catch(() => caches.match(e.request, { ignoreSearch: true })));
});

const eventBody = (opened) => JSON.parse(new TextDecoder().decode(opened.plain));

async function onPush(msg) {
  try {
    const { d: device, s: seq } = msg;
    const opened = msg.env
      ? await seal.open(device, seal.unb64(msg.env), seal.unb64(msg.ct))
      : await seal.fetchOpen(device, seq);
    let shown;
    if (opened.manifest.kind === "voicemail") {
      // the visitor's message, verified and decrypted here like everything else
      shown = await notifyVoicemail(device, opened);
    } else if (opened.manifest.kind === "thumbnail") {
      // the visitor's picture, after its event: the same notification again, with it
      shown = await addPicture(device, opened, async (parent) => eventBody(await seal.fetchOpen(device, parent)),
        { motion: true });
    } else {
      // its picture may have overtaken it and be up already: leave that one as it is
      const [up] = await self.registration.getNotifications({ tag: `${device}/${seq}` });
      shown = up?.data?.picture || (await notify(eventBody(opened), { device, seq }, { motion: true }));
    }
    if (!shown) await self.registration.showNotification(`Activity at ${device}`, { tag: "quiet", silent: true });
  } catch (err) {
    await self.registration.showNotification("Doorbell: an event could not be opened", {
      body: err.message, tag: "error" });
  }
}

// One push at a time: an event and its picture arrive together, and each reads what the other
// has shown.
let pushes = Promise.resolve();
self.addEventListener("push", (e) => {
  let msg = {};
  try { msg = e.data ? e.data.json() : {}; } catch { msg = {}; }
  pushes = pushes.then(() => onPush(msg));
  e.waitUntil(pushes);
});

self.addEventListener("notificationclick", (e) => {
  e.notification.close();
  const open = e.notification.data?.open || "#timeline";
  e.waitUntil((async () => {
    const wins = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    for (const w of wins) { w.postMessage({ open }); return w.focus(); }
    return self.clients.openWindow("/" + open);
  })());
});
