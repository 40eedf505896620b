// The service worker: Web Push while the app is closed. The push service carried RFC 8291
// ciphertext; inside is the doorbell's sealed event (or which one to fetch, sealed, from the
// hub). It is verified and decrypted here, with the keys in IndexedDB, and shown with the
// visitor's picture. Tapping it opens the event.
import * as seal from "/static/js/seal.js";
import { addPicture, notify } from "/static/js/notify.js";

const SHELL = ["/", "/static/app.css", "/static/js/app.js", "/static/js/seal.js", "/static/js/db.js",
  "/static/js/notify.js", "/manifest.webmanifest", "/static/icon-192.png"];

self.addEventListener("install", (e) => {
  e.waitUntil(caches.open("shell-v1").then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));

// The app's shell from the network first, from the cache when the hub is unreachable; the API
// (ciphertext, sessions) is never cached here.
self.addEventListener("fetch", (e) => {
  const url = new URL(e.request.url);
  if (e.request.method !== "GET" || url.origin !== location.origin || url.pathname.startsWith("/api/")) return;
  e.respondWith(fetch(e.request).catch(() => caches.match(e.request, { ignoreSearch: true })));
});

const eventBody = (opened) => JSON.parse(new TextDecoder().decode(opened.plain));

async function onPush(msg) {
  try {
    const { d: device, s: seq } = msg;
    const opened = msg.env
      ? await seal.open(device, seal.unb64(msg.env), seal.unb64(msg.ct))
      : await seal.fetchOpen(device, seq);
    let shown;
    if (opened.manifest.kind === "thumbnail") {
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
