// Drives the chat example in real headless Chromium: three users, one room, who is online
// and in the room (across instances), private messages (`@bob ...` and a click on a name)
// and the server's `question` Ask answered by a page (`GET /ask?to=bob&question=...` on
// alice's instance).
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

// Sends `@to text` and waits for our own line "private to <to>".
async function sendPrivate(page, to, text) {
  await page.fill("#text", `@${to} ${text}`);
  await page.press("#text", "Enter");
  await page.locator("#messages li.chat.mine.private", { hasText: text }).waitFor();
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

  step("who is online, across instances: alice sees bob (with his instance) and carol");
  const bobLabel = await bob.locator("#instance").textContent();
  const bobOnline = alice.locator('#online .person[data-user="bob"]');
  await bobOnline.waitFor();
  if ((await bobOnline.getAttribute("title")) !== `on ${bobLabel}`) {
    throw new Error(`bob shown ${await bobOnline.getAttribute("title")}, expected on ${bobLabel}`);
  }
  await alice.locator('#online .person[data-user="carol"]').waitFor();
  await bob.locator('#online .person[data-user="alice"]').waitFor();

  step("the login form is gone once connected");
  if (await alice.locator("#login-form").isVisible()) throw new Error("login form still visible");
  await alice.locator("#chat").waitFor();

  step("alice and bob join lobby");
  await join(alice, "lobby");
  await join(bob, "lobby");
  await notice(alice, "bob joined lobby");
  await alice.locator('#room-members .person[data-user="bob"]').waitFor();
  await bob.locator('#room-members .person[data-user="alice"]').waitFor();

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
  await alice.locator('#room-members .person[data-user="bob"]').waitFor({ state: "detached" });

  step("bob writes to everyone: alice and carol read it");
  await send(bob, "hello everyone");
  await received(carol, "bob", "hello everyone", "everyone");
  await received(alice, "bob", "hello everyone", "everyone");

  step("carol, outside the room, never got the room messages");
  const leaked = await carol.locator("#messages li.chat", { hasText: "hello from alice" }).count();
  if (leaked !== 0) throw new Error("carol received a message sent to room lobby");

  step("alice writes @bob …: only bob reads it, as private");
  await sendPrivate(alice, "bob", "psst, alice here");
  await received(bob, "alice", "psst, alice here", "private");

  step("bob clicks alice's name and answers privately");
  await bob.locator('#messages li.chat[data-from="alice"] .from').first().click();
  const prefilled = await bob.inputValue("#text");
  if (prefilled !== "@alice ") throw new Error(`a click on alice's name wrote "${prefilled}"`);
  await bob.locator("#text").pressSequentially("got it");
  await bob.press("#text", "Enter");
  await bob.locator("#messages li.chat.mine.private", { hasText: "got it" }).waitFor();
  await received(alice, "bob", "got it", "private");

  step("carol clicks bob in the online list: a private message to bob");
  await carol.locator('#online .person[data-user="bob"]').click();
  const toBob = await carol.inputValue("#text");
  if (toBob !== "@bob ") throw new Error(`a click on bob in the online list wrote "${toBob}"`);
  await carol.fill("#text", "");

  step("carol got no private message (fenced by a message to everyone)");
  await send(bob, "fence after the private messages");
  await received(carol, "bob", "fence after the private messages", "everyone");
  const privates = await carol.locator("#messages li.chat.private").count();
  if (privates !== 0) throw new Error(`carol received ${privates} private message(s)`);

  step("GET /ask?to=bob on alice's instance: bob's page shows the question and answers");
  const bobInstance = await bob.locator("#instance").textContent();
  const aliceInstance = await alice.locator("#instance").textContent();
  console.log(`alice on "${aliceInstance}", bob on "${bobInstance}"`);
  const question = "are you there?";
  const res = await fetch(`${args.url}/ask?to=bob&question=${encodeURIComponent(question)}`);
  const answer = await res.text();
  const expected = `bob read "${question}" on ${bobInstance}`;
  if (res.status !== 200 || answer !== expected) {
    throw new Error(`/ask answered ${res.status} "${answer}", expected 200 "${expected}"`);
  }
  await bob.locator("#messages li.question", { hasText: `the server asks: ${question}` }).waitFor();
  await bob.locator("#messages li.question", { hasText: `answered: ${expected}` }).waitFor();
  console.log(`/ask answered: ${answer}`);

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
