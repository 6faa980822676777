"use strict";
// The demo page: pick a model, upload (file picker or drop), record or listen live, classify through the
// public API and show what was found: events on the plots and in a list, playable; the plots on a time axis.

const $ = (id) => document.getElementById(id);
const KEY = "diffres-api-key";
const MAX_RECORD_S = 30;
const RECORDING_TYPES = [["audio/webm;codecs=opus", "webm"], ["audio/ogg;codecs=opus", "ogg"],
  ["audio/mp4", "m4a"], ["audio/webm", "webm"]];
// The model was trained on unprocessed audio: no echo cancellation, noise suppression or gain control.
const RAW_MIC = {audio: {echoCancellation: false, noiseSuppression: false, autoGainControl: false}};
const state = {models: {}, file: null, url: null, result: null, seq: 0, stopAt: null, playing: null,
  recorder: null, timer: null, live: null};

const pct = (score) => `${(score * 100).toFixed(1)}%`;
const secs = (t) => t.toFixed(2);
const threshold = (v) => String(Number(Number(v).toFixed(3)));
const model = () => state.models[$("model").value];

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function say(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
  status.setAttribute("role", isError ? "alert" : "status");
}

/** fetch with the API key when one is set; JSON errors become Error(message) with .status. */
async function api(path, options = {}) {
  const key = sessionStorage.getItem(KEY);
  const headers = key ? {Authorization: `Bearer ${key}`} : {};
  const response = await fetch(path, {...options, headers});
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = body && body.error;
    const error = new Error((detail && (detail.message || detail)) || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function needKey(error) {
  if (error.status !== 401) return false;
  $("key-box").open = true;
  $("api-key").focus();
  say(`${error.message}. Enter an API key below.`, true);
  return true;
}

async function loadModels() {
  try {
    const {models, default_model: fallback} = await api("/v1/models");
    const select = $("model");
    select.replaceChildren(...models.map((m) => new Option(`${m.name} (${m.labels.length} labels)`, m.name)));
    select.value = fallback;
    state.models = Object.fromEntries(models.map((m) => [m.name, m]));
    modelChanged(false);
    say("");
  } catch (error) {
    if (needKey(error)) return;
    if (error.status === 503) {
      say("Models are loading…");
      setTimeout(loadModels, 1000);
    } else say(`Could not list the models: ${error.message}`, true);
  }
}

/** A new model: its description, its default threshold, and the current file classified again. */
function modelChanged(reclassify = true) {
  const m = model();
  $("model-info").textContent = m
    ? `${m.sample_rate} Hz, ${m.window_s} s windows (longer audio over ${m.long_audio_s} s is windowed), DiffRes keeps ` +
      `${Math.round((1 - m.delta) * 100)}% of the frames; labels: ${m.labels.filter((l) => l !== m.background_label).join(", ")}`
    : "";
  if (m) {
    setThreshold(m.min_score);
    $("min-score-default").textContent = `model default ${threshold(m.min_score)}`;
  }
  if (reclassify && state.file) request();
}

function setThreshold(value) {
  $("min-score").value = threshold(value);
  $("min-score-range").value = value;
}

function labelColour(label) {
  const m = state.result && state.models[state.result.model];
  return Plots.colour(m ? m.labels.indexOf(label) : 0);
}

// ---- uploads ----------------------------------------------------------------------------------------

/** A new recording or file: keep it (the threshold control asks again with it), play it, classify it. */
function classify(blob, filename) {
  state.file = {blob, filename};
  if (state.url) URL.revokeObjectURL(state.url);
  state.url = URL.createObjectURL(blob);
  state.stopAt = state.playing = null;
  $("player").src = state.url;
  return request();
}

async function request() {
  const {blob, filename} = state.file;
  const m = model();
  const minScore = Math.min(1, Math.max(0, Number($("min-score").value) || 0));
  const form = new FormData();
  form.append("file", blob, filename);
  const query = new URLSearchParams({model: $("model").value, top_k: String(m ? Math.min(10, m.labels.length) : 5),
    include_importance: "true", include_spectrogram: "true", min_score: threshold(minScore)});
  const seq = ++state.seq;
  state.asked = query.get("min_score");
  say(`Classifying ${filename} (${Math.ceil(blob.size / 1024)} KB) at min_score ${threshold(minScore)}…`);
  $("result").setAttribute("aria-busy", "true");
  try {
    const result = await api(`/v1/classify?${query}`, {method: "POST", body: form});
    if (seq !== state.seq) return;
    say("");
    show(result, filename);
  } catch (error) {
    if (seq !== state.seq) return;
    $("result").hidden = true;
    if (!needKey(error)) say(error.message, true);
  } finally {
    if (seq === state.seq) $("result").removeAttribute("aria-busy");
  }
}

function show(result, filename) {
  state.result = result;
  $("result").hidden = false;
  const f = result.frames, w = result.windowing;
  $("summary").textContent = `${filename}: ${secs(result.duration_s)} s of ${result.format}, ${result.channels} channel(s) at ` +
    `${result.sample_rate} Hz · ${w ? `${w.windows} windows of ${w.window_s} s · ` : ""}${f.input} frames in, ` +
    `${f.output} to the classifier (${Math.round(f.reduction * 100)}% fewer) · ${Math.round(result.timing_ms.total)} ms`;
  // Long audio has no spectrogram: the page already asks for the importance over the whole file instead.
  const warnings = (result.warnings || []).filter((text) => !text.startsWith("no spectrogram"));
  $("warnings").hidden = !warnings.length;
  $("warnings").textContent = warnings.join(" ");
  $("importance-note").textContent = result.spectrogram ? "" :
    `; the whole file: audio over ${state.models[result.model].long_audio_s} s is windowed, so there is no spectrogram`;
  showVerdict(result);
  showEvents(result);
  showLabels(result);
  draw(result);
}

function showVerdict(result) {
  const verdict = $("verdict"), at = `min_score ${threshold(result.min_score)}`;
  verdict.className = result.detected ? "detected" : "nothing";
  verdict.dataset.detected = result.detected;
  if (result.detected) {
    const labels = [...new Set(result.events.map((e) => e.label))];
    const n = result.events.length;
    verdict.textContent = `Detected ${n} event${n === 1 ? "" : "s"} (${labels.join(", ")}) above the threshold (${at}).`;
  } else {
    const m = state.models[result.model];
    const best = result.predictions.find((p) => !m || p.label !== m.background_label);
    verdict.textContent = `Nothing detected above the threshold (${at}).` +
      (best ? ` Highest: ${best.label}, best window score ${pct(best.score)}.` : "");
  }
}

function showEvents(result) {
  $("events-threshold").textContent = `(min_score ${threshold(result.min_score)})`;
  const rows = result.events.map((e, i) => el("li", {},
    el("button", {type: "button", className: "event", dataset: {index: i, label: e.label, start: e.start_s, end: e.end_s,
      score: e.score}, title: `Play ${secs(e.start_s)}–${secs(e.end_s)} s`, onclick: () => playStretch(e)},
    el("span", {className: "swatch", style: `background:${labelColour(e.label)}`, "aria-hidden": "true"}),
    el("span", {className: "name"}, e.label),
    el("span", {className: "times"}, `${secs(e.start_s)}–${secs(e.end_s)} s`),
    el("span", {className: "score"}, pct(e.score)))));
  $("events").replaceChildren(...(rows.length ? rows : [el("li", {className: "empty"}, "none")]));
  $("events-hint").hidden = !rows.length;
}

function showLabels(result) {
  const m = state.models[result.model];
  $("labels").replaceChildren(...result.predictions.map((p) => {
    const background = m && p.label === m.background_label;
    return el("li", {dataset: {label: p.label, score: p.score, passed: p.passed},
      className: `${p.passed ? "passed" : ""} ${background ? "background" : ""}`},
      el("span", {className: "name", title: background ? "the model's background (no keyword) label" : p.label}, p.label),
      el("span", {className: "score", title: "best window score"}, pct(p.score)),
      el("span", {className: "badge", title: p.passed ? "passed its threshold" : "below its threshold"}, p.passed ? "✓" : ""),
      el("span", {className: "bar", style: `width:${Math.max(0.5, p.score * 100)}%`, "aria-hidden": "true"}));
  }));
}

// ---- plots, markers, playhead -----------------------------------------------------------------------

function draw(result) {
  const spec = result.spectrogram;
  $("spectrogram-box").hidden = $("merged-box").hidden = !spec;
  const importance = spec ? spec.importance : result.importance;
  const hopS = spec ? spec.hop_s : result.importance_hop_s;
  $("importance-box").hidden = !importance;
  if (spec) {
    const levels = Plots.range(spec.logmel), span = spec.logmel.length * spec.hop_s;
    Plots.heatmap($("logmel"), spec.logmel, levels, spec.boundaries.slice(1, -1));
    $("logmel").setAttribute("aria-label", `Log-mel spectrogram: ${spec.logmel.length} frames of ` +
      `${spec.hop_s * 1000} ms, ${spec.logmel[0].length} mel bands`);
    Plots.axis($("logmel-axis"), span);
    decorate($("logmel").parentElement, span, result.events);
    Plots.heatmap($("merged"), spec.merged, levels);
    $("merged").setAttribute("aria-label", `Merged spectrogram: ${spec.merged.length} frames`);
  }
  if (importance) {
    const high = importance.filter((v) => v > 0.9).length, span = importance.length * hopS;
    Plots.curve($("importance"), importance, {label: `${high} of ${importance.length} frames ≥ 0.9`});
    $("importance").setAttribute("aria-label", `Importance curve: ${high} of ${importance.length} frames at 0.9 or above`);
    Plots.axis($("importance-axis"), span);
    decorate($("importance").parentElement, span, result.events);
  }
  const segments = result.segments || [];
  $("timeline-box").hidden = segments.length === 0;
  if (segments.length) {
    const m = state.models[result.model];
    Plots.timeline($("timeline"), segments, result.duration_s, m ? m.background_label : "");
    $("timeline").setAttribute("aria-label", `${segments.length} windows`);
    Plots.axis($("timeline-axis"), result.duration_s);
    decorate($("timeline").parentElement, result.duration_s, []);
    const w = result.windowing;
    $("windows-summary").textContent = `Per-window results (${segments.length} windows` +
      (w ? ` of ${w.window_s} s, one every ${w.hop_s} s)` : ")");
    $("segments").tBodies[0].replaceChildren(...segments.map((s) => el("tr", {className: s.predictions[0].passed ? "passed" : ""},
      ...[secs(s.start_s), secs(s.end_s), s.predictions[0].label, pct(s.predictions[0].score)].map((t) => el("td", {}, t)))));
  }
  movePlayhead();
}

/** Event markers (a shaded stretch and a clickable label) and a playhead over a plot of `span` seconds. */
function decorate(track, span, events) {
  track.querySelectorAll(".marker, .playhead").forEach((node) => node.remove());
  track.dataset.span = span;
  const lanes = [], pad = span * (90 / Math.max(200, track.clientWidth));  // room for a label, in seconds
  events.forEach((e, i) => {
    let lane = lanes.findIndex((end) => end <= e.start_s);
    if (lane < 0) lane = lanes.length < 3 ? lanes.push(0) - 1 : i % 3;
    lanes[lane] = Math.max(e.end_s, e.start_s + pad);
    const left = Math.max(0, Math.min(100, (e.start_s / span) * 100));
    const width = Math.max(0.4, Math.min(100 - left, ((e.end_s - e.start_s) / span) * 100));
    const colour = labelColour(e.label);
    track.append(el("div", {className: "marker", style: `left:${left}%;width:${width}%;--c:${colour}`,
      dataset: {index: i, label: e.label, start: e.start_s, end: e.end_s}},
    el("button", {type: "button", className: "flag", style: `top:${0.25 + lane * 1.45}rem`,
      title: `${e.label} ${secs(e.start_s)}–${secs(e.end_s)} s, ${pct(e.score)}: play`,
      onclick: () => playStretch(e)}, e.label)));
  });
  track.append(el("div", {className: "playhead", "aria-hidden": "true"}));
}

function movePlayhead() {
  const player = $("player"), t = player.currentTime || 0;
  for (const track of document.querySelectorAll("#result .track[data-span]")) {
    const head = track.querySelector(".playhead");
    if (head) head.style.left = `${Math.min(100, (t / Number(track.dataset.span)) * 100)}%`;
  }
  if (state.stopAt !== null && t >= state.stopAt) {
    player.pause();
    state.stopAt = null;
  }
  document.querySelectorAll(".event, .marker").forEach((node) => node.classList.toggle("playing",
    state.playing !== null && Number(node.dataset.index) === state.playing && !player.paused));
}

function tick() {
  movePlayhead();
  if (!$("player").paused) requestAnimationFrame(tick);
}

/** Play one event's stretch of the uploaded audio, then stop. */
function playStretch(event) {
  const player = $("player");
  state.playing = state.result.events.indexOf(event);
  state.stopAt = event.end_s;
  player.currentTime = event.start_s;
  movePlayhead();
  player.play().catch((error) => say(`Cannot play the audio here: ${error.message}`, true));
}

// ---- recording (MediaRecorder, then an upload) -----------------------------------------------------

async function toggleRecording() {
  if (state.recorder) {
    state.recorder.stop();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia(RAW_MIC);
  } catch (error) {
    say(`The microphone is not available: ${error.message}`, true);
    return;
  }
  const [mimeType, extension] = RECORDING_TYPES.find(([t]) => MediaRecorder.isTypeSupported(t)) || ["", "webm"];
  const recorder = new MediaRecorder(stream, mimeType ? {mimeType} : {});
  const chunks = [];
  const started = Date.now();
  recorder.ondataavailable = (event) => event.data.size && chunks.push(event.data);
  recorder.onstop = () => {
    clearInterval(state.timer);
    stream.getTracks().forEach((track) => track.stop());
    state.recorder = null;
    pressed($("record"), false, "Record");
    $("listen").disabled = false;
    $("record-status").textContent = "";
    classify(new Blob(chunks, {type: recorder.mimeType}), `recording.${extension}`);
  };
  recorder.start();
  state.recorder = recorder;
  pressed($("record"), true, "Stop");
  $("listen").disabled = true;
  state.timer = setInterval(() => {
    const seconds = (Date.now() - started) / 1000;
    $("record-status").textContent = `recording… ${seconds.toFixed(1)} s`;
    if (seconds >= MAX_RECORD_S) recorder.stop();
  }, 100);
}

function pressed(button, on, text) {
  button.textContent = text;
  button.setAttribute("aria-pressed", String(on));
}

// ---- listening (microphone -> PCM f32le -> /v1/stream) ----------------------------------------------

// Mono float PCM in ~100 ms messages, cut in the audio thread (values clamped to [-1, 1] as f32le needs).
const TAP = `registerProcessor("pcm-tap", class extends AudioWorkletProcessor {
  constructor() { super(); this.size = Math.round(sampleRate / 10); this.buf = new Float32Array(this.size); this.n = 0; }
  process(inputs) {
    const chans = inputs[0];
    if (chans && chans.length) for (let i = 0; i < chans[0].length; i++) {
      let v = 0;
      for (const c of chans) v += c[i];
      this.buf[this.n++] = Math.max(-1, Math.min(1, v / chans.length));
      if (this.n === this.size) { this.port.postMessage(this.buf, [this.buf.buffer]); this.buf = new Float32Array(this.size); this.n = 0; }
    }
    return true;
  }
});`;

/** An audio node that calls `send` with ~100 ms Float32Array chunks: an AudioWorklet, or a ScriptProcessor. */
async function pcmTap(audio, send) {
  if (audio.audioWorklet) {
    const url = URL.createObjectURL(new Blob([TAP], {type: "text/javascript"}));
    try {
      await audio.audioWorklet.addModule(url);
    } finally {
      URL.revokeObjectURL(url);
    }
    const node = new AudioWorkletNode(audio, "pcm-tap", {numberOfOutputs: 1});
    node.port.onmessage = (m) => send(m.data);
    return node;
  }
  const node = audio.createScriptProcessor(4096, 1, 1), size = Math.round(audio.sampleRate / 10);
  let buf = new Float32Array(size), n = 0;
  node.onaudioprocess = (e) => {
    for (const v of e.inputBuffer.getChannelData(0)) {
      buf[n++] = Math.max(-1, Math.min(1, v));
      if (n === size) { send(buf); buf = new Float32Array(size); n = 0; }
    }
  };
  return node;
}

async function toggleListening() {
  if (state.live) return stopListening();
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia(RAW_MIC);
  } catch (error) {
    say(`The microphone is not available: ${error.message}`, true);
    return;
  }
  const audio = new AudioContext();
  const query = new URLSearchParams({model: $("model").value, sample_rate: String(audio.sampleRate), format: "f32le",
    channels: "1", min_score: threshold($("min-score").value)});
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/stream?${query}`);
  ws.binaryType = "arraybuffer";
  const live = state.live = {ws, audio, stream, rate: audio.sampleRate, sent: 0, queue: [], open: new Map(),
    count: 0, timer: null, stopping: false};
  const send = (chunk) => {
    if (ws.readyState === WebSocket.CONNECTING) live.queue.push(chunk);
    else if (ws.readyState === WebSocket.OPEN && !live.stopping) {
      ws.send(chunk.buffer);
      live.sent += chunk.length;
    }
  };
  ws.onopen = () => live.queue.splice(0).forEach(send);
  ws.onmessage = (m) => typeof m.data === "string" && onLive(live, JSON.parse(m.data));
  ws.onclose = (e) => {
    if (!live.ended && e.code !== 1000) liveStatus(`The stream closed (${e.code}${e.reason ? `: ${e.reason}` : ""}).`);
    releaseMic(live);
    if (state.live === live) state.live = null;
    pressed($("listen"), false, "Listen");
    $("record").disabled = false;
  };
  $("live").hidden = false;
  $("live-events").replaceChildren();
  liveStatus("connecting…");
  pressed($("listen"), true, "Stop");
  $("record").disabled = true;
  try {
    await audio.resume();
    live.node = await pcmTap(audio, send);
    live.source = audio.createMediaStreamSource(stream);
    live.mute = audio.createGain();
    live.mute.gain.value = 0;  // pulled by the graph, heard by nobody
    live.source.connect(live.node);
    live.node.connect(live.mute);
    live.mute.connect(audio.destination);
  } catch (error) {
    say(`Cannot read the microphone: ${error.message}`, true);
    ws.close();
    return;
  }
  live.timer = setInterval(() => !live.stopping && liveStatus(`listening… ${(live.sent / live.rate).toFixed(1)} s sent ` +
    `at ${live.rate} Hz, min_score ${query.get("min_score")}; ${live.count} event(s) so far`), 250);
}

function stopListening() {
  const live = state.live;
  if (!live || live.stopping) return;
  live.stopping = true;
  releaseMic(live);
  if (live.ws.readyState === WebSocket.OPEN) {
    live.ws.send(JSON.stringify({type: "end"}));
    liveStatus(`stopped after ${(live.sent / live.rate).toFixed(1)} s; waiting for the last windows…`);
  } else live.ws.close();
}

function releaseMic(live) {
  clearInterval(live.timer);
  live.stream.getTracks().forEach((track) => track.stop());
  if (live.audio.state !== "closed") live.audio.close().catch(() => {});
}

function liveStatus(text) {
  $("live-status").textContent = text;
}

function onLive(live, message) {
  if (message.type === "ready") {
    liveStatus(`listening with ${message.model} (${message.window_s} s windows every ${message.hop_s} s)…`);
  } else if (message.type === "onset" || message.type === "event") {
    const final = message.type === "event";
    let row = live.open.get(message.label);
    if (!row) {
      row = el("li");
      $("live-events").append(row);
    }
    if (final) {
      live.open.delete(message.label);
      live.count += 1;
    } else live.open.set(message.label, row);
    Object.assign(row.dataset, {kind: message.type, label: message.label, start: message.start_s, end: message.end_s,
      score: message.score});
    row.className = `event ${message.type}`;
    row.replaceChildren(
      el("span", {className: "swatch", style: `background:${liveColour(message.label)}`, "aria-hidden": "true"}),
      el("span", {className: "name"}, message.label),
      el("span", {className: "times"}, `${secs(message.start_s)}–${secs(message.end_s)} s`),
      el("span", {className: "score"}, pct(message.score)),
      el("span", {className: "kind"}, final ? "event" : `onset, at ${secs(message.stream_s)} s…`));
  } else if (message.type === "end") {
    live.ended = true;
    const m = state.models[$("model").value];
    liveStatus(`Stream over: ${secs(message.duration_s)} s, ${message.windows} windows, ` +
      (message.detected ? `${message.events} event(s).` : `nothing detected above the threshold ` +
      `(min_score ${threshold(new URLSearchParams(live.ws.url.split("?")[1]).get("min_score") || (m && m.min_score))}).`));
  } else if (message.type === "error") {
    live.ended = true;
    say(`Listen: ${message.message}`, true);
    liveStatus(`stopped: ${message.code}`);
  }
}

function liveColour(label) {
  const m = model();
  return Plots.colour(m ? m.labels.indexOf(label) : 0);
}

// ---- wiring -----------------------------------------------------------------------------------------

function start() {
  $("api-key").value = sessionStorage.getItem(KEY) || "";
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem(KEY, $("api-key").value.trim());
    loadModels();
  });
  $("model").addEventListener("change", () => modelChanged());
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (file) classify(file, file.name);
    $("file").value = "";
  });
  // Drop a file anywhere on the page.
  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files");
  document.addEventListener("dragover", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    $("drop").classList.add("over");
  });
  document.addEventListener("dragleave", (e) => !e.relatedTarget && $("drop").classList.remove("over"));
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    $("drop").classList.remove("over");
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) classify(file, file.name);
  });
  // The threshold: the slider and the box agree; a settled value asks the API again with the same file.
  let pending = null;
  const settle = (delay) => {
    clearTimeout(pending);
    pending = setTimeout(() => state.file && threshold($("min-score").value) !== state.asked && request(), delay);
  };
  $("min-score-range").addEventListener("input", () => { $("min-score").value = threshold($("min-score-range").value); settle(400); });
  $("min-score").addEventListener("input", () => { $("min-score-range").value = $("min-score").value; settle(700); });
  for (const id of ["min-score", "min-score-range"]) $(id).addEventListener("change", () => settle(0));
  // Playback: the playhead follows the audio; an event's stretch stops at its end.
  const player = $("player");
  player.addEventListener("play", () => requestAnimationFrame(tick));
  for (const name of ["seeked", "timeupdate", "pause", "loadedmetadata"]) player.addEventListener(name, movePlayhead);
  player.addEventListener("seeked", () => {
    const e = state.result && state.result.events[state.playing];
    if (e && (player.currentTime < e.start_s - 0.05 || player.currentTime > e.end_s + 0.05)) state.stopAt = state.playing = null;
  });
  const media = window.MediaRecorder && navigator.mediaDevices;
  if (media) $("record").addEventListener("click", toggleRecording);
  else $("record").disabled = true;
  if (navigator.mediaDevices && window.AudioContext && window.WebSocket) $("listen").addEventListener("click", toggleListening);
  else $("listen").disabled = true;
  let resize = null;
  window.addEventListener("resize", () => {
    clearTimeout(resize);
    resize = setTimeout(() => state.result && draw(state.result), 150);
  });
  loadModels();
}

start();
