// slimspeech playground: record or upload a clip, run it on every checked model at once (streamed),
// and compare: the texts with a word diff against the reference (the checked model with the most
// decoder layers: the base beside its pruned export), latency, time to first token, tokens/s, RTFx,
// and each model's decoder layers and weight size from GET /v1/models. No dependencies, no CDN.

const $ = (id) => document.getElementById(id);
const state = { models: [], clip: null, recording: null };

// ---- the server ---------------------------------------------------------------------------------
function auth() {
  const key = $("key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function errorMessage(resp) {
  try {
    const body = await resp.json();
    return (body.error && body.error.message) || JSON.stringify(body);
  } catch {
    return `${resp.status} ${resp.statusText}`;
  }
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function loadModels() {
  let resp;
  try {
    resp = await fetch("/v1/models", { headers: auth() });
  } catch (err) {
    return setStatus(`the server does not answer: ${err.message}`, true);
  }
  if (!resp.ok) {
    state.models = [];
    renderModels();
    return setStatus(resp.status === 401 ? "this server needs its API key: type it above"
                                         : await errorMessage(resp), true);
  }
  state.models = (await resp.json()).data;
  renderModels();
  setStatus(`${state.models.length} model${state.models.length === 1 ? "" : "s"} served`);
}

function megabytes(bytes) {
  return bytes == null ? "?" : `${(bytes / 1e6).toFixed(1)} MB`;
}

function renderModels() {
  const box = $("models");
  box.replaceChildren(Object.assign(document.createElement("legend"), { textContent: "Models" }));
  for (const m of state.models) {
    const label = document.createElement("label");
    const check = Object.assign(document.createElement("input"), { type: "checkbox", checked: true });
    check.dataset.model = m.id;
    check.addEventListener("change", updateRun);
    label.append(check, ` ${m.id} (${m.decoder_layers} decoder layers, ${megabytes(m.weight_bytes)})`);
    box.append(label);
  }
  const targets = new Map();
  for (const m of state.models) for (const [code, name] of Object.entries(m.languages.targets || {})) targets.set(code, name);
  const select = $("target");
  select.replaceChildren(...[...targets].map(([code, name]) => new Option(`${name} (${code})`, code)));
  select.disabled = $("task").value !== "translate" || targets.size === 0;
  updateRun();
}

function checkedModels() {
  const ids = [...document.querySelectorAll("#models input:checked")].map((c) => c.dataset.model);
  return state.models.filter((m) => ids.includes(m.id));
}

function updateRun() {
  $("run").disabled = !state.clip || checkedModels().length === 0;
}

// ---- the clip: recorded (as WAV, through an AudioWorklet) or a file -----------------------------
function wavBlob(samples, rate) {
  const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const ascii = (at, s) => [...s].forEach((c, i) => view.setUint8(at + i, c.charCodeAt(0)));
  ascii(0, "RIFF"); view.setUint32(4, 36 + samples.length * 2, true); ascii(8, "WAVE");
  ascii(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, rate * 2, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); ascii(36, "data"); view.setUint32(40, samples.length * 2, true);
  samples.forEach((x, i) => {
    const s = Math.max(-1, Math.min(1, x));
    view.setInt16(44 + 2 * i, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  });
  return new Blob([view], { type: "audio/wav" });
}

async function startRecording() {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
  const ctx = new AudioContext();
  await ctx.audioWorklet.addModule("/static/recorder-worklet.js");
  const node = new AudioWorkletNode(ctx, "pcm-recorder");
  const blocks = [];
  node.port.onmessage = (e) => blocks.push(e.data);
  const mute = ctx.createGain();
  mute.gain.value = 0;  // pulled by the graph, heard by nobody
  ctx.createMediaStreamSource(stream).connect(node).connect(mute).connect(ctx.destination);
  state.recording = { stream, ctx, blocks };
}

async function stopRecording() {
  const { stream, ctx, blocks } = state.recording;
  state.recording = null;
  stream.getTracks().forEach((t) => t.stop());
  await ctx.close();
  const samples = new Float32Array(blocks.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of blocks) { samples.set(b, at); at += b.length; }
  setClip(wavBlob(samples, ctx.sampleRate), "recording.wav", samples.length / ctx.sampleRate);
}

async function setClip(blob, name, duration = null) {
  if (duration === null) {
    try {  // what the browser can decode; the server decodes more (RTFx is left out otherwise)
      const ctx = new OfflineAudioContext(1, 1, 16000);
      duration = (await ctx.decodeAudioData(await blob.arrayBuffer())).duration;
    } catch {
      duration = null;
    }
  }
  state.clip = { blob, name, duration };
  $("player").src = URL.createObjectURL(blob);
  $("player").hidden = false;
  $("clip").textContent = `${name}${duration === null ? "" : ` · ${duration.toFixed(2)} s`}`;
  updateRun();
}

// ---- running: one streamed request per model, all at once -----------------------------------------
function card(model) {
  const root = document.createElement("article");
  root.className = "card";
  root.dataset.model = model.id;
  root.dataset.state = "running";
  const title = Object.assign(document.createElement("h2"), { textContent: model.id });
  const facts = Object.assign(document.createElement("p"), {
    className: "facts",
    textContent: `${model.family} · ${model.decoder_layers} decoder layers · ${megabytes(model.weight_bytes)} of weights`,
  });
  const text = Object.assign(document.createElement("div"), { className: "text" });
  const figures = document.createElement("dl");
  const diff = Object.assign(document.createElement("div"), { className: "diff" });
  root.append(title, facts, text, figures, diff);
  $("results").append(root);
  return { root, text, figures, diff };
}

function figure(c, key, label, value) {
  const dd = Object.assign(document.createElement("dd"), { textContent: value });
  dd.dataset.figure = key;
  c.figures.append(Object.assign(document.createElement("dt"), { textContent: label }), dd);
}

async function* serverEvents(resp) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const data = buf.slice(0, cut).split("\n").filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trim()).join("\n");
      buf = buf.slice(cut + 2);
      if (data && data !== "[DONE]") yield JSON.parse(data);
    }
  }
}

async function runOne(model, c) {
  const form = new FormData();
  form.append("file", state.clip.blob, state.clip.name);
  form.append("model", model.id);
  form.append("stream", "true");
  let url = "/v1/audio/transcriptions";
  if ($("task").value === "translate") {
    url = "/v1/audio/translations";
    form.append("target_language", $("target").value);
  }
  const t0 = performance.now();
  let ttft = null, text = "", usage = null;
  try {
    const resp = await fetch(url, { method: "POST", body: form, headers: auth() });
    if (!resp.ok) throw new Error(await errorMessage(resp));
    for await (const ev of serverEvents(resp)) {
      if (ev.error) throw new Error(ev.error.message);
      if (ev.type === "transcript.text.delta") {
        if (ttft === null) ttft = performance.now() - t0;
        text += ev.delta;
      } else if (ev.type === "transcript.text.done") {
        text = ev.text;
        usage = ev.usage || null;
      }
      c.text.textContent = text;
    }
  } catch (err) {
    c.text.textContent = err.message;
    c.text.classList.add("error");
    c.root.dataset.state = "error";
    return null;
  }
  const seconds = (performance.now() - t0) / 1000;
  const tokens = usage ? usage.output_tokens : null;
  figure(c, "latency", "latency", `${(seconds * 1000).toFixed(0)} ms`);
  figure(c, "ttft", "time to first token", ttft === null ? "–" : `${ttft.toFixed(0)} ms`);
  figure(c, "tokens", "output tokens", tokens === null ? "?" : String(tokens));
  figure(c, "tokens_per_s", "tokens/s", tokens === null ? "?" : (tokens / seconds).toFixed(1));
  figure(c, "rtfx", "RTFx (audio s / latency s)", state.clip.duration === null ? "?" : (state.clip.duration / seconds).toFixed(1));
  c.root.dataset.state = "done";
  return { model, text, card: c };
}

// ---- the word diff against the reference ---------------------------------------------------------
const norm = (w) => w.toLowerCase().replace(/[^\p{L}\p{N}']/gu, "");
const words = (s) => s.split(/\s+/).filter(Boolean);

function wordDiff(ref, hyp) {
  // longest common subsequence of the normalised words: ["same"|"del"|"ins", word] in reading order
  const a = words(ref), b = words(hyp), n = a.length, m = b.length;
  const lcs = Array.from({ length: n + 1 }, () => new Int32Array(m + 1));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      lcs[i][j] = norm(a[i]) === norm(b[j]) ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (norm(a[i]) === norm(b[j])) { out.push(["same", b[j]]); i++; j++; }
    else if (lcs[i + 1][j] >= lcs[i][j + 1]) out.push(["del", a[i++]]);
    else out.push(["ins", b[j++]]);
  }
  while (i < n) out.push(["del", a[i++]]);
  while (j < m) out.push(["ins", b[j++]]);
  return out;
}

function wordEdits(ref, hyp) {  // Levenshtein distance over normalised words (the WER numerator)
  const a = words(ref).map(norm), b = words(hyp).map(norm);
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++)
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
}

function showDiff(ref, out) {
  const edits = wordEdits(ref.text, out.text), n = words(ref.text).length;
  const head = document.createElement("p");
  head.dataset.figure = "disagreement";
  head.textContent = edits === 0 ? `same words as ${ref.model.id}`
    : `${edits} word edit${edits === 1 ? "" : "s"} against ${ref.model.id} (${n ? ((100 * edits) / n).toFixed(1) : "∞"}% of its words):`;
  out.card.diff.append(head);
  if (edits === 0) return;
  const line = document.createElement("p");
  for (const [op, w] of wordDiff(ref.text, out.text)) {
    line.append(op === "same" ? document.createTextNode(w) : Object.assign(document.createElement(op), { textContent: w }), " ");
  }
  out.card.diff.append(line);
}

async function run() {
  $("run").disabled = true;
  $("results").replaceChildren();
  const models = checkedModels();
  const cards = models.map(card);
  const outs = (await Promise.all(models.map((m, i) => runOne(m, cards[i])))).filter(Boolean);
  const ref = outs.reduce((best, o) => (!best || o.model.decoder_layers > best.model.decoder_layers ? o : best), null);
  for (const o of outs) if (o !== ref) showDiff(ref, o);
  updateRun();
}

// ---- wiring ----------------------------------------------------------------------------------------
$("key").value = sessionStorage.getItem("slimspeech-key") || "";
$("key").addEventListener("change", () => {
  sessionStorage.setItem("slimspeech-key", $("key").value.trim());
  loadModels();
});
$("task").addEventListener("change", renderModels);
$("file").addEventListener("change", () => {
  const f = $("file").files[0];
  if (f) setClip(f, f.name);
});
$("record").addEventListener("click", async () => {
  const button = $("record");
  try {
    if (state.recording) {
      await stopRecording();
      button.textContent = "● Record";
      button.classList.remove("recording");
    } else {
      await startRecording();
      button.textContent = "■ Stop";
      button.classList.add("recording");
    }
  } catch (err) {
    setStatus(`the microphone: ${err.message}`, true);
  }
});
$("run").addEventListener("click", run);
loadModels();
