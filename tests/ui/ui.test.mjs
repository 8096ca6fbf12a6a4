// fave's web page in a real browser: Debian's Chromium driven by Playwright (playwright-core,
// which never downloads a browser), against the real local stack. Started by the Rust test
// `ui::the_web_page_in_a_real_browser` (tests/tests/it/ui.rs), which runs the requests first
// and passes what it made:
//
//   FAVE_UI_BASE       the page's address under the gateway (…/function/orchestrator/ui/)
//   FAVE_UI_COMPLETED  a completed request of vtest.avi, asking for cars
//   FAVE_UI_FAILED     a failed request (a text file posing as a video)
//   FAVE_UI_OTHER      another completed request, whose keys the first's page must refuse
//   FAVE_UI_VIDEO      vtest.avi's video id in the library
//   FAVE_UI_SAMPLE     a file:// URI of vtest.avi, to submit a request and watch it run
//   FAVE_UI_ARTEFACTS  where the screenshots go (never committed)
//
// Run by hand: node --test tests/ui/ui.test.mjs, with those set.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} is not set`);
  return value;
};
const base = env("FAVE_UI_BASE");
const completed = env("FAVE_UI_COMPLETED");
const failed = env("FAVE_UI_FAILED");
const other = env("FAVE_UI_OTHER");
const video = env("FAVE_UI_VIDEO");
const artefacts = env("FAVE_UI_ARTEFACTS");
const api = new URL("../", base).href; // the orchestrator's API, beside /ui/

let browser;
let context;

before(async () => {
  mkdirSync(artefacts, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.FAVE_CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
    ],
  });
  context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
});

after(async () => {
  await browser?.close();
});

async function json(path) {
  const answer = await context.request.get(api + path);
  assert.equal(answer.status(), 200, `${path}: ${await answer.text()}`);
  return answer.json();
}

test("the requests page lists the completed request as COMPLETED and the failed one as FAILED", async () => {
  const page = await context.newPage();
  await page.goto(base);
  const row = page.locator(`tr[data-request="${completed}"]`);
  await assert.doesNotReject(row.waitFor());
  assert.equal((await row.locator(".status").textContent()).trim(), "COMPLETED");
  const bad = page.locator(`tr[data-request="${failed}"]`);
  assert.equal((await bad.locator(".status").textContent()).trim(), "FAILED");
  // Filtered by status, only completed requests remain.
  await page.click("text=COMPLETED >> nth=0");
  await page.waitForURL(/status=COMPLETED/);
  const statuses = await page.locator("tr[data-request] .status").allTextContents();
  assert.ok(statuses.length >= 2, `${statuses}`);
  assert.ok(statuses.every((s) => s.trim() === "COMPLETED"), `${statuses}`);
  await page.close();
});

test("the request page shows 4 clip cards whose frames have car and person boxes inside the frame", async () => {
  const page = await context.newPage();
  const clock = Date.now();
  await page.goto(`${base}requests/${completed}`, { waitUntil: "load" });
  const loaded = Date.now() - clock;
  const clips = await page.locator("article.clip").count();
  assert.equal(clips, 4);
  const perClip = await page.$$eval("article.clip", (cards) =>
    cards.map((card) => {
      const labels = new Set();
      let outside = [];
      let boxes = 0;
      for (const figure of card.querySelectorAll("figure.frame")) {
        const img = figure.querySelector("img").getBoundingClientRect();
        for (const g of figure.querySelectorAll("svg.boxes g.box")) {
          boxes += 1;
          labels.add(g.dataset.label);
          const r = g.querySelector("rect").getBoundingClientRect();
          const inside =
            r.width > 0 && r.height > 0 &&
            r.left >= img.left - 1 && r.top >= img.top - 1 &&
            r.right <= img.right + 1 && r.bottom <= img.bottom + 1;
          if (!inside) outside.push(g.dataset.label);
        }
      }
      return { clip: card.id, frames: card.querySelectorAll("figure.frame").length, boxes, labels: [...labels], outside };
    }),
  );
  let frames = 0;
  for (const c of perClip) {
    frames += c.frames;
    assert.ok(c.frames > 0, `${c.clip} has no frames`);
    assert.ok(c.labels.includes("car"), `${c.clip}: ${c.labels}`);
    assert.ok(c.labels.includes("person"), `${c.clip}: ${c.labels}`);
    assert.deepEqual(c.outside, [], `${c.clip}: boxes outside their frame`);
  }
  // The pictures themselves arrive: the first frame's image decodes.
  const first = page.locator("figure.frame img").first();
  await first.scrollIntoViewIfNeeded();
  await page.waitForFunction(() => {
    const img = document.querySelector("figure.frame img");
    return img && img.complete && img.naturalWidth > 0;
  });
  // What the page weighs: its HTML, script and stylesheet.
  const html = (await (await context.request.get(`${base}requests/${completed}`)).body()).length;
  const js = (await (await context.request.get(`${base}assets/fave.js`)).body()).length;
  const css = (await (await context.request.get(`${base}assets/fave.css`)).body()).length;
  console.log(
    `request page: ${clips} clips, ${frames} frames, ${perClip.reduce((n, c) => n + c.boxes, 0)} boxes; ` +
      `HTML ${html} B, JS ${js} B, CSS ${css} B; loaded in ${loaded} ms`,
  );
  // Every frame brought in (they load lazily, as they are scrolled to) before the picture.
  for (const img of await page.locator("figure.frame img").all()) await img.scrollIntoViewIfNeeded();
  await page.waitForFunction(() => [...document.querySelectorAll("figure.frame img")].every((i) => i.complete && i.naturalWidth > 0));
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(artefacts, "request.png"), fullPage: true });
  await page.close();
});

test("a clip's video loads and seeks, through range requests answered with 206", async () => {
  const page = await context.newPage();
  const partial = [];
  page.on("response", (r) => {
    if (r.url().includes("/media/") && r.url().endsWith("video.mp4")) partial.push(r.status());
  });
  await page.goto(`${base}requests/${completed}`);
  const player = page.locator("article.clip video").first();
  await player.scrollIntoViewIfNeeded();
  const seeked = await player.evaluate(
    (v) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`stuck at readyState ${v.readyState}`)), 20000);
        const seek = () => {
          v.addEventListener("seeked", () => { clearTimeout(timer); resolve({ at: v.currentTime, duration: v.duration }); }, { once: true });
          v.currentTime = Math.min(3, v.duration / 2);
        };
        if (v.readyState >= 1) seek();
        else { v.addEventListener("loadedmetadata", seek, { once: true }); v.load(); }
      }),
  );
  assert.ok(seeked.duration > 1, JSON.stringify(seeked));
  assert.ok(Math.abs(seeked.at - Math.min(3, seeked.duration / 2)) < 0.5, JSON.stringify(seeked));
  assert.ok(partial.includes(206), `media answers: ${partial}`);
  // And asked directly: a range is answered with exactly its bytes.
  const src = await player.evaluate((v) => v.currentSrc);
  const ranged = await context.request.get(src, { headers: { range: "bytes=10-19" } });
  assert.equal(ranged.status(), 206);
  assert.equal((await ranged.body()).length, 10);
  assert.match(ranged.headers()["content-range"], /^bytes 10-19\/\d+$/);
  const beyond = await context.request.get(src, { headers: { range: "bytes=999999999-" } });
  assert.equal(beyond.status(), 416);
  await page.close();
});

test("the timeline has one bar per attempt recorded in state.json", async () => {
  const state = await json(`requests/${completed}`);
  const tasks = [...state.stages, ...state.clips.flatMap((c) => c.tasks)];
  const attempts = tasks.reduce((n, t) => n + t.attempts.length, 0);
  const page = await context.newPage();
  await page.goto(`${base}requests/${completed}`);
  const bars = await page.locator(".timeline-picture svg rect.bar").count();
  assert.ok(attempts >= 13, `${attempts} attempts`);
  assert.equal(bars, attempts);
  await page.close();
});

test("a failed request shows its error code", async () => {
  const state = await json(`requests/${failed}`);
  assert.equal(state.status, "FAILED");
  const page = await context.newPage();
  await page.goto(`${base}requests/${failed}`);
  const shown = (await page.locator(".failure .error-code").first().textContent()).trim();
  assert.equal(shown, state.error_code);
  await page.close();
});

test("a hostile path gets the JSON 404, and a frame of another request is refused", async () => {
  const notFound = async (path) => {
    const answer = await context.request.get(base + path, { maxRedirects: 0 });
    assert.equal(answer.status(), 404, `${path}: ${answer.status()}`);
    const body = await answer.json();
    assert.equal(body.error.code, "not_found", `${path}: ${JSON.stringify(body)}`);
  };
  await notFound("%2e%2e/%2e%2e/%2e%2e/etc/passwd");
  await notFound("assets/..%2F..%2Fstate.json");
  await notFound("no/such/page");
  // A key of the other request, asked for through this request's page: refused, though the
  // other request's own page shows it.
  const page = await context.newPage();
  await page.goto(`${base}requests/${other}`);
  const theirs = await page.locator("figure.frame img").first().getAttribute("src");
  await page.close();
  const key = theirs.split("/media/")[1];
  assert.ok(key.startsWith(`requests/${other}/`), key);
  const own = await context.request.get(new URL(theirs, `${base}requests/${other}`).href);
  assert.equal(own.status(), 200);
  await notFound(`requests/${completed}/media/${key}`);
  await notFound(`requests/${completed}/media/requests/${completed}/../${other}/state.json`);
  await notFound(`requests/${completed}/media/requests/${completed}/state.json`);
});

test("a search for cars lists vtest's clips first, each with its frame and boxes", async () => {
  const page = await context.newPage();
  await page.goto(base);
  await page.fill("nav input[name=q]", "cars");
  await page.press("nav input[name=q]", "Enter");
  await page.waitForURL(/search\?q=cars/);
  const results = page.locator("li.result");
  assert.ok((await results.count()) >= 4);
  const videos = await results.evaluateAll((items) => items.map((i) => i.dataset.video));
  assert.deepEqual(videos.slice(0, 4), [video, video, video, video], `${videos}`);
  const carBoxes = await results.first().locator("g.box.matched[data-label=car]").count();
  assert.ok(carBoxes >= 1, "the first moment's frame shows a matched car");
  // Each opens the clip at that moment.
  await results.first().locator("a.thumb").click();
  await page.waitForURL(/requests\/[0-9a-f]+\?clip=clip-\d+&t=/);
  const src = await page.locator("video[autoplay]").getAttribute("src");
  assert.match(src, /video\.mp4#t=\d/);
  await page.screenshot({ path: join(artefacts, "search.png"), fullPage: false });
  await page.close();
});

test("a running request's page follows it to its end without a reload", async () => {
  const page = await context.newPage();
  const submitted = await context.request.post(api, {
    headers: { prefer: "respond-async" },
    data: { video_uri: env("FAVE_UI_SAMPLE"), query: "cars", fresh: true },
  });
  assert.equal(submitted.status(), 202);
  const { request_id: id } = await submitted.json();
  await page.goto(base);
  await page.evaluate(() => { window.notReloaded = true; });
  const status = page.locator(`tr[data-request="${id}"] .status`);
  assert.notEqual((await status.textContent()).trim(), "COMPLETED");
  await page.waitForFunction(
    (id) => document.querySelector(`tr[data-request="${id}"] .status`)?.textContent.trim() === "COMPLETED",
    id,
    { timeout: 120000, polling: 500 },
  );
  assert.equal(await page.evaluate(() => window.notReloaded), true);
  await page.close();
});
