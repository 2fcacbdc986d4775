// Drives the chat example in real headless Chromium: three users, one room.
//
//   node chat.mjs --url http://127.0.0.1:PORT [--url2 http://127.0.0.1:PORT2] \
//       --chromium /usr/bin/chromium --screenshots DIR [--name chat]
//
// alice and carol open --url, bob opens --url2 (default: --url), so with two instances of
// the scale-out example every message bob sends or receives crosses the exchange.
// Screenshots: DIR/<name>.png (alice), DIR/<name>-bob.png, DIR/<name>-carol.png.
// Run by examples/tests/browser.rs, which starts the chat app and installs this folder's
// package.json (playwright-core, neffos.js) into target/browser-npm. Every wait is bounded;
// exit code 0 = passed, 1 = failed (reason on stderr), 2 = overall timeout.
import { mkdirSync } from "node:fs";
import { join as joinPath } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const STEP_TIMEOUT = 10_000;
const OVERALL_TIMEOUT = 90_000;

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    url2: { type: "string" },
    name: { type: "string", default: "chat" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
    screenshots: { type: "string", default: "." },
  },
});
if (!args.url) {
  console.error("usage: node chat.mjs --url http://HOST:PORT [--chromium PATH] [--screenshots DIR]");
  process.exit(1);
}

const watchdog = setTimeout(() => {
  console.error(`browser test: no result after ${OVERALL_TIMEOUT} ms`);
  process.exit(2);
}, OVERALL_TIMEOUT);
watchdog.unref();

const step = (text) => console.log(`step: ${text}`);
const pageErrors = [];

async function openPage(context, name, url) {
  const page = await context.newPage();
  page.on("console", (m) => {
    console.log(`[${name} console.${m.type()}] ${m.text()}`);
    if (m.type() === "error") pageErrors.push(`${name} console: ${m.text()}`);
  });
  page.on("pageerror", (e) => pageErrors.push(`${name}: ${e.message}`));
  await page.goto(url);
  await page.fill("#username", name);
  await page.click("#connect");
  await page.locator("#status.ok", { hasText: `connected as ${name}` }).waitFor();
  return page;
}

async function join(page, room) {
  await page.fill("#room", room);
  await page.click("#join");
  await page.locator("#current-room", { hasText: `in room ${room}` }).waitFor();
}

async function send(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
  await page.locator("#messages li.chat.mine", { hasText: text }).waitFor();
}

// Waits until `page` shows a chat line from `from` with `text`, sent to `where`.
async function received(page, from, text, where) {
  const line = page.locator(`#messages li.chat[data-from="${from}"]`, { hasText: text });
  await line.waitFor();
  const shown = await line.locator(".where").textContent();
  if (shown !== where) throw new Error(`"${text}" shown as sent to ${shown}, expected ${where}`);
}

async function notice(page, text) {
  await page.locator("#messages li.notice", { hasText: text }).waitFor();
}

let browser;
try {
  step(`launching ${args.chromium}`);
  browser = await chromium.launch({
    executablePath: args.chromium,
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
    timeout: 30_000,
  });
  const context = await browser.newContext({ viewport: { width: 800, height: 720 } });
  context.setDefaultTimeout(STEP_TIMEOUT);

  step("alice, bob and carol log in");
  const alice = await openPage(context, "alice", args.url);
  const bob = await openPage(context, "bob", args.url2 || args.url);
  const carol = await openPage(context, "carol", args.url);
  await notice(alice, "carol is online");

  step("the login form is gone once connected");
  if (await alice.locator("#login-form").isVisible()) throw new Error("login form still visible");
  await alice.locator("#chat").waitFor();

  step("alice and bob join lobby");
  await join(alice, "lobby");
  await join(bob, "lobby");
  await notice(alice, "bob joined lobby");

  step("alice writes in lobby, bob reads it");
  await send(alice, "hello from alice");
  await received(bob, "alice", "hello from alice", "#lobby");

  step("bob answers in lobby, alice reads it");
  await send(bob, "hi alice, bob here");
  await received(alice, "bob", "hi alice, bob here", "#lobby");

  step("bob leaves lobby, alice is told");
  await bob.click("#leave");
  await bob.locator("#current-room", { hasText: "not in a room" }).waitFor();
  await notice(alice, "bob left lobby");

  step("bob writes to everyone: alice and carol read it");
  await send(bob, "hello everyone");
  await received(carol, "bob", "hello everyone", "everyone");
  await received(alice, "bob", "hello everyone", "everyone");

  step("carol, outside the room, never got the room messages");
  const leaked = await carol.locator("#messages li.chat", { hasText: "hello from alice" }).count();
  if (leaked !== 0) throw new Error("carol received a message sent to room lobby");

  if (pageErrors.length > 0) throw new Error(`page errors: ${pageErrors.join("; ")}`);

  mkdirSync(args.screenshots, { recursive: true });
  const shots = [[args.name, alice], [`${args.name}-bob`, bob], [`${args.name}-carol`, carol]];
  for (const [file, page] of shots) {
    const path = joinPath(args.screenshots, `${file}.png`);
    await page.screenshot({ path });
    console.log(`screenshot: ${path}`);
  }
  console.log("browser test: passed");
} catch (e) {
  console.error(`browser test: FAILED: ${e && e.stack ? e.stack : e}`);
  process.exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  clearTimeout(watchdog);
}
