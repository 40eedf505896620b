// The service worker: Web Push while the app is closed. The push service carried RFC 8291
// ciphertext; inside is the doorbell's sealed event (or which one to fetch, sealed, from the
// hub). It is verified and decrypted here, with the keys in IndexedDB, and shown with the
// visitor's picture. Tapping it opens the event.
import * as seal from "/static/js/seal.js";
import { notify } from "/static/js/notify.js";

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

async function onPush(msg) {
  try {
    const { d: device, s: seq } = msg;
    const opened = msg.env
      ? await seal.open(device, seal.unb64(msg.env), seal.unb64(msg.ct))
      : await seal.fetchOpen(device, seq);
    const body = JSON.parse(new TextDecoder().decode(opened.plain));
    if (!(await notify(body, { device, seq }, { motion: true }))) {
      await self.registration.showNotification(`Activity at ${device}`, { tag: "quiet", silent: true });
    }
  } catch (err) {
    await self.registration.showNotification("Doorbell: an event could not be opened", {
      body: err.message, tag: "error" });
  }
}

self.addEventListener("push", (e) => {
  let msg = {};
  try { msg = e.data ? e.data.json() : {}; } catch { msg = {}; }
  e.waitUntil(onPush(msg));
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
