// June's voice page: the /v1/realtime protocol (README) in a browser, no build step.
// The API key lives in this tab's session storage only: never in the URL or a cookie.

const $ = (id) => document.getElementById(id);
const store = window.sessionStorage;
let key = store.getItem("june.key");
let conversationId = store.getItem("june.conversation");
let ws = null; // the live session
let ready = null; // resolves when the session says "ready"
let mic = null; // { stream, ctx }
let sending = false; // whether microphone audio goes to the server
let current = null; // the turn being answered: { user, june }
let replyCount = 0;

function setState(state, text) {
  document.body.dataset.state = state;
  $("status").textContent = text;
}

function mode() {
  return document.querySelector("input[name=mode]:checked").value;
}

// --- reply audio: PCM16 pieces scheduled back to back; stopped at once on barge-in -----

class Player {
  constructor() {
    this.ctx = new AudioContext();
    this.rate = 22050;
    this.at = 0;
    this.sources = new Set();
    this.recorded = [];
  }

  play(data) {
    const pcm = new Int16Array(data, 0, Math.floor(data.byteLength / 2));
    const samples = Float32Array.from(pcm, (s) => s / 32768);
    this.recorded.push(samples);
    const buffer = this.ctx.createBuffer(1, samples.length, this.rate);
    buffer.copyToChannel(samples, 0);
    const source = this.ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.ctx.destination);
    const start = Math.max(this.ctx.currentTime + 0.03, this.at);
    source.start(start);
    this.at = start + buffer.duration;
    this.sources.add(source);
    source.onended = () => {
      this.sources.delete(source);
      if (this.sources.size === 0 && document.body.dataset.state === "speaking") {
        setState("listening", sending || mode() === "manual" ? "Listening" : "Ready");
      }
    };
    setState("speaking", "June is speaking");
  }

  get playing() {
    return this.sources.size > 0;
  }

  stop() {
    for (const source of this.sources) {
      source.onended = null;
      source.stop();
    }
    this.sources.clear();
    this.at = 0;
  }

  // The reply as heard, as a WAV file (for the reply's download link).
  take() {
    const length = this.recorded.reduce((n, s) => n + s.length, 0);
    if (length === 0) return null;
    const view = new DataView(new ArrayBuffer(44 + length * 2));
    const text = (at, s) => [...s].forEach((c, i) => view.setUint8(at + i, c.charCodeAt(0)));
    text(0, "RIFF");
    view.setUint32(4, 36 + length * 2, true);
    text(8, "WAVEfmt ");
    view.setUint32(16, 16, true);
    view.setUint16(20, 1, true);
    view.setUint16(22, 1, true);
    view.setUint32(24, this.rate, true);
    view.setUint32(28, this.rate * 2, true);
    view.setUint16(32, 2, true);
    view.setUint16(34, 16, true);
    text(36, "data");
    view.setUint32(40, length * 2, true);
    let at = 44;
    for (const piece of this.recorded) {
      for (const s of piece) {
        view.setInt16(at, Math.max(-32768, Math.min(32767, Math.round(s * 32768))), true);
        at += 2;
      }
    }
    this.recorded = [];
    return new Blob([view.buffer], { type: "audio/wav" });
  }
}

let player = null;

// --- the conversation on the page ------------------------------------------------------

function addLine(who, text) {
  const li = document.createElement("li");
  li.className = who;
  const span = document.createElement("span");
  span.textContent = text;
  li.append(span);
  $("history").append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function setLine(li, text) {
  li.querySelector("span").textContent = text;
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${key}`, ...(options.headers || {}) },
  });
  if (response.status === 401) {
    signOut("The key was refused");
    throw new Error("unauthorised");
  }
  return response;
}

async function loadHistory() {
  $("history").replaceChildren();
  if (!conversationId) return;
  const response = await api(`/v1/conversations/${conversationId}`);
  if (!response.ok) {
    conversationId = null;
    store.removeItem("june.conversation");
    return;
  }
  for (const turn of (await response.json()).turns) {
    addLine("user", turn.transcript);
    const june = addLine("june", turn.reply);
    if (turn.interrupted) june.classList.add("interrupted");
  }
}

// --- the live session ---------------------------------------------------------------------

function onEvent(event) {
  switch (event.type) {
    case "ready":
      setState("listening", sending ? "Listening" : "Ready");
      break;
    case "speech_started":
      if (player && player.playing) player.stop(); // barge-in: silent at once
      setState("user-speaking", "Hearing you…");
      break;
    case "partial_transcript":
      $("partial").textContent = event.text;
      break;
    case "speech_stopped":
      setState("thinking", "Thinking…");
      break;
    case "transcript":
      $("partial").textContent = "";
      if (!event.text) {
        setState("listening", "Didn't catch that");
        break;
      }
      current = { user: addLine("user", event.text), june: addLine("june", "") };
      break;
    case "delta":
      if (current) setLine(current.june, current.june.textContent + event.text);
      break;
    case "audio":
      player.rate = event.sample_rate;
      break;
    case "interrupted": {
      player.stop();
      const lines = document.querySelectorAll("#history li.june");
      const june = current ? current.june : lines[lines.length - 1];
      if (june) {
        june.classList.add("interrupted");
        if (event.reply !== undefined) setLine(june, event.reply);
      }
      break;
    }
    case "turn_done": {
      conversationId = event.conversation_id;
      store.setItem("june.conversation", conversationId);
      if (current) {
        setLine(current.june, event.reply);
        if (event.interrupted) current.june.classList.add("interrupted");
        const audio = player.take();
        if (audio) {
          const link = document.createElement("a");
          link.href = URL.createObjectURL(audio);
          link.download = `june-reply-${++replyCount}.wav`;
          link.textContent = "Reply audio";
          current.june.append(link);
        }
      }
      current = null;
      if (!player.playing) setState("listening", "Listening");
      break;
    }
    case "error":
      setState("error", `${event.status}: ${event.detail}`);
      break;
  }
}

function connect() {
  if (ws && ws.readyState <= WebSocket.OPEN) return ready;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${scheme}://${location.host}/v1/realtime`);
  ws.binaryType = "arraybuffer";
  const socket = ws;
  ready = new Promise((resolve, reject) => {
    socket.onopen = () => {
      const start = { type: "start", key, turn_detection: mode() };
      if (conversationId) start.conversation_id = conversationId;
      socket.send(JSON.stringify(start));
    };
    socket.onmessage = (message) => {
      if (typeof message.data !== "string") {
        player.play(message.data);
        return;
      }
      const event = JSON.parse(message.data);
      if (event.type === "ready") resolve();
      onEvent(event);
    };
    socket.onclose = (event) => {
      reject(new Error(`closed ${event.code}`));
      if (ws === socket) {
        ws = null;
        stopMic();
        if (document.body.dataset.state !== "error") setState("idle", "Disconnected");
      }
    };
  });
  return ready;
}

function disconnect() {
  if (ws) ws.close(1000, "bye");
  ws = null;
}

async function startMic() {
  if (mic) return;
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  });
  const ctx = new AudioContext({ sampleRate: 16000 });
  await ctx.audioWorklet.addModule("/web/capture-worklet.js");
  const node = new AudioWorkletNode(ctx, "june-capture");
  node.port.onmessage = (message) => {
    if (sending && ws && ws.readyState === WebSocket.OPEN) ws.send(message.data);
  };
  ctx.createMediaStreamSource(stream).connect(node);
  node.connect(ctx.destination); // pulls the worklet; it writes no output (silence)
  mic = { stream, ctx };
}

function stopMic() {
  sending = false;
  if (mic) {
    mic.stream.getTracks().forEach((track) => track.stop());
    mic.ctx.close();
    mic = null;
  }
  const listen = $("listen");
  listen.setAttribute("aria-pressed", "false");
  listen.textContent = "Start listening";
}

// --- controls ---------------------------------------------------------------------------

// The session and the microphone, opened on a click (browsers start audio only then).
async function openMic() {
  player = player || new Player();
  await player.ctx.resume();
  try {
    await connect();
    await startMic();
    return true;
  } catch (error) {
    setState("error", `Could not start: ${error.message}`);
    return false;
  }
}

async function toggleListening() {
  const listen = $("listen");
  if (sending) {
    stopMic();
    setState("idle", "Not listening");
    return;
  }
  if (!(await openMic())) return;
  sending = true;
  listen.setAttribute("aria-pressed", "true");
  listen.textContent = "Stop listening";
  setState("listening", "Listening");
}

async function holdToTalk(event) {
  event.preventDefault();
  if (!(await openMic())) return;
  if (player.playing) {
    player.stop();
    ws.send(JSON.stringify({ type: "interrupt" }));
  }
  sending = true;
  $("hold").classList.add("active");
  setState("user-speaking", "Hearing you…");
}

function releaseTalk() {
  if (!sending) return;
  sending = false;
  $("hold").classList.remove("active");
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "commit" }));
}

function showMode() {
  const manual = mode() === "manual";
  $("hold").hidden = !manual;
  $("listen").hidden = manual;
  stopMic();
  disconnect(); // the next start says the new turn detection
}

function showTalk() {
  $("signin").hidden = true;
  $("talk").hidden = false;
  setState("idle", "Ready");
  loadHistory().catch(() => {});
}

function signOut(why) {
  stopMic();
  disconnect();
  store.clear();
  key = null;
  conversationId = null;
  $("history").replaceChildren();
  $("talk").hidden = true;
  $("signin").hidden = false;
  setState("signed-out", why || "Signed out");
}

$("signin").addEventListener("submit", (event) => {
  event.preventDefault();
  key = $("key").value.trim();
  $("key").value = "";
  store.setItem("june.key", key);
  showTalk();
});
$("listen").addEventListener("click", toggleListening);
$("hold").addEventListener("pointerdown", holdToTalk);
$("hold").addEventListener("pointerup", releaseTalk);
$("hold").addEventListener("pointerleave", releaseTalk);
$("hold").addEventListener("pointercancel", releaseTalk);
for (const input of document.querySelectorAll("input[name=mode]")) {
  input.addEventListener("change", showMode);
}
$("new").addEventListener("click", () => {
  conversationId = null;
  store.removeItem("june.conversation");
  $("history").replaceChildren();
  disconnect();
  stopMic();
  setState("idle", "New conversation");
});
$("signout").addEventListener("click", () => signOut());
$("upload").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("doc").files[0];
  if (!file) return;
  $("upload-status").textContent = "Uploading…";
  const response = await api("/v1/documents", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ title: file.name, text: await file.text() }),
  });
  const body = await response.json().catch(() => ({}));
  $("upload-status").textContent = response.ok
    ? `Added “${body.title}”`
    : `Not added: ${typeof body.detail === "string" ? body.detail : response.status}`;
});

if (key) showTalk();
