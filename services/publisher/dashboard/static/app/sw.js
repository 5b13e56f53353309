/* Service worker of the Open Smart City app: network first, the last viewed pages and data kept for offline. */
const CACHE = "kp-app-v1";
const SHELL = ["/app", "/static/app/app.js", "/static/dashboard.css", "/static/favicon.svg",
  "/static/app/icon-192.png", "/app.webmanifest"];
const KEEP = 60;

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

async function remember(request, response) {
  const cache = await caches.open(CACHE);
  await cache.put(request, response);
  const keys = await cache.keys();
  for (const old of keys.slice(0, Math.max(0, keys.length - KEEP))) {
    if (!SHELL.includes(new URL(old.url).pathname)) await cache.delete(old);
  }
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET" || new URL(request.url).origin !== self.location.origin) return;
  event.respondWith(fetch(request).then((response) => {
    if (response.ok) event.waitUntil(remember(request, response.clone()));
    return response;
  }).catch(async () => {
    const cached = await caches.match(request);
    if (cached) return cached;
    if (request.mode === "navigate") return (await caches.match("/app")) || Response.error();
    return Response.error();
  }));
});
