"use strict";
// The demo page: pick a model, upload or record, classify through the public API, draw the answer.

const $ = (id) => document.getElementById(id);
const KEY = "diffres-api-key";
const MAX_RECORD_S = 30;
const RECORDING_TYPES = [["audio/webm;codecs=opus", "webm"], ["audio/ogg;codecs=opus", "ogg"],
  ["audio/mp4", "m4a"], ["audio/webm", "webm"]];
const state = {recorder: null, timer: null, last: null};

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
    describeModel();
    say("");
  } catch (error) {
    if (needKey(error)) return;
    if (error.status === 503) {
      say("Models are loading…");
      setTimeout(loadModels, 1000);
    } else say(`Could not list the models: ${error.message}`, true);
  }
}

function describeModel() {
  const m = state.models && state.models[$("model").value];
  $("model-info").textContent = m
    ? `${m.sample_rate} Hz, ${m.clip_seconds} s clips, DiffRes keeps ${Math.round((1 - m.delta) * 100)}% of the frames; labels: ${m.labels.join(", ")}`
    : "";
}

async function classify(blob, filename) {
  const form = new FormData();
  form.append("file", blob, filename);
  const query = new URLSearchParams({model: $("model").value, top_k: "5",
    include_importance: "true", include_spectrogram: "true"});
  say(`Classifying ${filename} (${Math.ceil(blob.size / 1024)} KB)…`);
  try {
    const result = await api(`/v1/classify?${query}`, {method: "POST", body: form});
    say(`Classified ${filename}.`);
    show(result);
  } catch (error) {
    $("result").hidden = true;
    if (!needKey(error)) say(error.message, true);
  }
}

function showLabels(predictions) {
  $("labels").replaceChildren(...predictions.map((p) => {
    const item = document.createElement("li");
    item.dataset.label = p.label;
    item.dataset.score = p.score;
    const name = document.createElement("span");
    name.textContent = p.label;
    const score = document.createElement("span");
    score.textContent = `${(p.score * 100).toFixed(1)}%`;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(0.5, p.score * 100)}%`;
    bar.setAttribute("aria-hidden", "true");
    item.append(name, score, bar);
    return item;
  }));
}

function show(result) {
  state.last = result;
  $("result").hidden = false;
  showLabels(result.predictions);
  const f = result.frames;
  $("summary").textContent = `${result.duration_s.toFixed(2)} s of ${result.format}, ${result.channels} channel(s) at ` +
    `${result.sample_rate} Hz · ${f.input} frames in, ${f.output} to the classifier ` +
    `(${Math.round(f.reduction * 100)}% fewer) · ${Math.round(result.timing_ms.total)} ms`;
  $("warnings").hidden = !result.warnings;
  $("warnings").textContent = (result.warnings || []).join(" ");
  draw(result);
}

function draw(result) {
  const spec = result.spectrogram;
  $("spectrogram-box").hidden = !spec;
  $("merged-box").hidden = !spec;
  const importance = spec ? spec.importance : result.importance;
  $("importance-box").hidden = !importance;
  if (spec) {
    const levels = Plots.range(spec.logmel);
    Plots.heatmap($("logmel"), spec.logmel, levels, spec.boundaries.slice(1, -1));
    $("logmel").setAttribute("aria-label", `Log-mel spectrogram: ${spec.logmel.length} frames of ` +
      `${spec.hop_s * 1000} ms, ${spec.logmel[0].length} mel bands`);
    Plots.heatmap($("merged"), spec.merged, levels);
    $("merged").setAttribute("aria-label", `Merged spectrogram: ${spec.merged.length} frames`);
  }
  if (importance) {
    const high = importance.filter((v) => v > 0.9).length;
    const hopS = spec ? spec.hop_s : result.importance_hop_s;
    Plots.curve($("importance"), importance, {label: `${high} of ${importance.length} frames ≥ 0.9`, hopS});
    $("importance").setAttribute("aria-label", `Importance curve: ${high} of ${importance.length} frames at 0.9 or above`);
  }
  const segments = result.segments || [];
  $("timeline-box").hidden = segments.length === 0;
  if (segments.length) {
    Plots.timeline($("timeline"), segments, result.duration_s);
    $("timeline").setAttribute("aria-label", `${segments.length} windows`);
    $("segments").tBodies[0].replaceChildren(...segments.map((s) => {
      const row = document.createElement("tr");
      for (const text of [s.start_s.toFixed(2), s.end_s.toFixed(2), s.predictions[0].label,
        `${(s.predictions[0].score * 100).toFixed(1)}%`]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      return row;
    }));
  }
}

async function toggleRecording() {
  if (state.recorder) {
    state.recorder.stop();
    return;
  }
  let stream;
  try {
    // The model was trained on unprocessed audio: no echo cancellation, noise suppression or gain control.
    stream = await navigator.mediaDevices.getUserMedia({audio: {echoCancellation: false, noiseSuppression: false,
      autoGainControl: false}});
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
    $("record").textContent = "Record";
    $("record").setAttribute("aria-pressed", "false");
    $("record-status").textContent = "";
    classify(new Blob(chunks, {type: recorder.mimeType}), `recording.${extension}`);
  };
  recorder.start();
  state.recorder = recorder;
  $("record").textContent = "Stop";
  $("record").setAttribute("aria-pressed", "true");
  state.timer = setInterval(() => {
    const seconds = (Date.now() - started) / 1000;
    $("record-status").textContent = `recording… ${seconds.toFixed(1)} s`;
    if (seconds >= MAX_RECORD_S) recorder.stop();
  }, 100);
}

function start() {
  $("api-key").value = sessionStorage.getItem(KEY) || "";
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem(KEY, $("api-key").value.trim());
    loadModels();
  });
  $("model").addEventListener("change", describeModel);
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (file) classify(file, file.name);
    $("file").value = "";
  });
  if (window.MediaRecorder && navigator.mediaDevices) $("record").addEventListener("click", toggleRecording);
  else $("record").disabled = true;
  let pending = null;
  window.addEventListener("resize", () => {
    clearTimeout(pending);
    pending = setTimeout(() => state.last && draw(state.last), 150);
  });
  loadModels();
}

start();
