// The imagegen playground: plain JavaScript, no build step. Every control regenerates
// (debounced); the state lives in the URL's hash so a view can be shared; errors are shown as
// text (textContent only, never innerHTML); an API key, asked for when the server answers 401,
// is kept in sessionStorage and sent as `Authorization: Bearer`. What is on show always belongs to
// the current controls: a model change keeps the class by name (or says why not) and drops an
// upload made for another dataset; a failed request clears the output of the one before.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "imagegen.apiKey";
const DEBOUNCE_MS = 250;
const VIEWS = ["image", "grid", "interpolate", "reconstruct"];
// State fields kept in the URL hash, with the control each one reads from.
const FIELDS = { model: "model", class: "klass", seed: "seed", n: "n", seed_b: "seed-b", steps: "steps", cols: "cols" };

// classesFor: the model the class list was built for (its names are what a new model is matched
// on); upload: the file to reconstruct and the dataset of the model it was chosen for; curlFor:
// the request generation the curl line was written for.
const state = {
  models: {}, view: "image", objectUrl: null, generation: 0, timer: null,
  classesFor: null, upload: null, curlFor: 0,
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  toString() { return `${this.status} ${this.code}: ${this.message}`; }
}

// -- the API -------------------------------------------------------------------------------

function apiKey() { return sessionStorage.getItem(KEY_STORE) || ""; }

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (apiKey()) headers.set("Authorization", `Bearer ${apiKey()}`);
  const res = await fetch(path, { ...options, headers });
  if (res.ok) return res;
  let code = `http_${res.status}`;
  let message = res.statusText || "request failed";
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
      if (body.error.allowed) message += ` (allowed: ${[].concat(body.error.allowed).join(", ")})`;
      if (body.error.models && code !== "unknown_model") message += ` (models: ${body.error.models.join(", ")})`;
    }
  } catch (_) { /* not JSON: keep the status text */ }
  if (res.status === 401) showKeyBox(true);
  throw new ApiError(res.status, code, message);
}

// -- state <-> controls <-> URL ------------------------------------------------------------

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const out = {};
  for (const [name, value] of params) out[name] = value;
  return out;
}

function writeHash() {
  const params = new URLSearchParams();
  params.set("view", state.view);
  for (const [name, id] of Object.entries(FIELDS)) {
    const el = $(id);
    if (el.value !== "" && !el.disabled) params.set(name, el.value);
  }
  const hash = `#${params}`;
  if (location.hash !== hash) history.replaceState(null, "", hash);
}

function applyState(saved) {
  if (saved.model && state.models[saved.model] && state.models[saved.model].state === "ready") {
    $("model").value = saved.model;
  }
  fillClasses();
  fitUpload();
  for (const [name, id] of Object.entries(FIELDS)) {
    if (name !== "model" && saved[name] !== undefined) $(id).value = saved[name];
  }
  if (saved.class !== undefined) showNotice(null); // the link's class stands
  setView(VIEWS.includes(saved.view) ? saved.view : "image");
}

// -- models and the model card ---------------------------------------------------------------

/** The model to open on: the highest class accuracy (from its manifest's metrics) among ready
 *  non-baseline models; ties go to the server's default dataset, then to the id. */
function bestModel(models, defaultDataset) {
  const ready = models.filter((m) => m.state === "ready");
  const score = (m) => {
    const metrics = (m.manifest && m.manifest.metrics) || {};
    return typeof metrics.class_accuracy === "number" ? metrics.class_accuracy : -1;
  };
  const home = (m) => (m.dataset === defaultDataset ? 0 : 1);
  const pool = ready.filter((m) => !m.baseline);
  const ranked = (pool.length ? pool : ready).slice()
    .sort((a, b) => score(b) - score(a) || home(a) - home(b) || a.id.localeCompare(b.id));
  return ranked.length ? ranked[0].id : "";
}

async function loadModels() {
  const body = await (await api("/v1/models")).json();
  const select = $("model");
  select.replaceChildren();
  state.models = {};
  for (const m of body.models) {
    state.models[m.id] = m;
    const opt = document.createElement("option");
    opt.value = m.id;
    const acc = m.manifest && m.manifest.metrics && m.manifest.metrics.class_accuracy;
    opt.textContent = m.state !== "ready" ? `${m.id} (${m.state})`
      : typeof acc === "number" ? `${m.id} (class acc. ${pct(acc)})` : m.id;
    opt.disabled = m.state !== "ready";
    select.appendChild(opt);
  }
  select.value = bestModel(body.models, body.default_dataset);
}

function current() { return state.models[$("model").value]; }
function hasEncoder(m) { return Boolean(m && m.manifest && m.manifest.extra_onnx && m.manifest.extra_onnx.encoder); }
function hasLatent(m) { return Boolean(m && m.manifest && "z" in m.manifest.inputs); }

function classLabel(m, i) {
  const name = m.manifest.class_names[i];
  return name === String(i) ? name : `${i}: ${name}`;
}

/** The index of `name` among the model's classes, ignoring case; -1 where it has none. */
function classIndex(m, name) {
  const wanted = name.toLowerCase();
  return m.manifest.class_names.findIndex((n) => n.toLowerCase() === wanted);
}

/** Where a class name the current model lacks can be found: "Bag is a fashion class (gan-fashion,
 *  …)", or "" where no ready model has it. */
function classElsewhere(name) {
  const holders = Object.values(state.models)
    .filter((x) => x.state === "ready" && x.conditional && !x.baseline && classIndex(x, name) >= 0);
  if (!holders.length) return "";
  const datasets = [...new Set(holders.map((x) => x.dataset))].join("/");
  return ` (${name} is a ${datasets} class: ${holders.map((x) => x.id).join(", ")})`;
}

/** Fills the class list for the current model. A class chosen for the model before is kept by
 *  name (case-insensitive, as names are what the user picked); where the new model has no class
 *  of that name, the first class is chosen and the notice says so. */
function fillClasses() {
  const before = state.models[state.classesFor];
  const select = $("klass");
  const chosen = before && before.conditional && !select.disabled && select.value !== ""
    ? before.manifest.class_names[Number(select.value)] : null;
  const m = current();
  state.classesFor = m ? m.id : null;
  showNotice(null);
  select.length = 1;
  select.disabled = !m || !m.conditional;
  if (select.disabled) {
    if (m && chosen !== null) showNotice(`${m.id} takes no class: class ${chosen} is not used.`);
    return;
  }
  m.manifest.class_names.forEach((_, i) => {
    const opt = document.createElement("option");
    opt.value = String(i);
    opt.textContent = classLabel(m, i);
    select.appendChild(opt);
  });
  if (chosen === null) { select.value = ""; return; }
  const index = classIndex(m, chosen);
  select.value = String(Math.max(index, 0));
  if (index < 0) {
    showNotice(`${m.id} has no class ${chosen}${classElsewhere(chosen)}; the class is now ${classLabel(m, 0)}.`);
  }
}

function showNotice(text) {
  $("notice").hidden = !text;
  $("notice").textContent = text || "";
}

/** An upload chosen for one dataset's model does not fit another dataset's (other subjects, often
 *  another size): switching to such a model drops it and what was drawn from it, saying so. */
function fitUpload() {
  const m = current();
  if (state.upload && m && state.upload.dataset !== m.dataset) {
    const { file, dataset } = state.upload;
    state.upload = null;
    $("file").value = "";
    clearReconstruction();
    showUpload(`${file.name} was for the ${dataset} models and is set aside: drop a ${m.dataset} image for ${m.id}.`);
  }
}

function showUpload(note) {
  const u = state.upload;
  $("upload-name").textContent = u ? `Reconstructing ${u.file.name} (for the ${u.dataset} models).` : note || "";
}

function fact(dl, name, value) {
  if (value === undefined || value === null || value === "") return;
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = String(value);
  dl.append(dt, dd);
}

const pct = (x) => (typeof x === "number" ? `${(100 * x).toFixed(1)}%` : undefined);
const num = (x) => (typeof x === "number" ? x.toFixed(2) : undefined);

/** The model card's terms (license, attribution, intended use, limitations); a manifest from
 *  before model cards has none (`card: null`) and says so. */
function showTerms(card) {
  const dl = $("card-terms-facts");
  if (!card) {
    fact(dl, "license", "unknown: no model card (exported before cards)");
    return;
  }
  fact(dl, "license", card.license);
  fact(dl, "attribution", card.attribution);
  fact(dl, "intended use", card.intended_use);
  fact(dl, "limitations", card.limitations);
}

async function showCard() {
  const m = current();
  const dl = $("card-facts");
  dl.replaceChildren();
  $("card-terms-facts").replaceChildren();
  $("card-grid-figure").hidden = true;
  if (!m || !m.manifest) return;
  const man = m.manifest;
  $("card-title").textContent = m.id;
  showTerms(m.card);
  fact(dl, "family", man.family + (man.baseline ? " (seed baseline)" : ""));
  fact(dl, "dataset", man.dataset);
  fact(dl, "version", man.version);
  fact(dl, "image", `${man.image.width}×${man.image.height}×${man.image.channels}`);
  fact(dl, "latent", man.latent_dim || "none (class only)");
  fact(dl, "classes", man.num_classes);
  const q = man.metrics || {};
  fact(dl, "class accuracy", pct(q.class_accuracy));
  if (q.worst_class !== undefined && q.worst_class !== null) fact(dl, "worst class", `${q.worst_class} (${pct(q.worst_class_accuracy)})`);
  if (typeof q.fid_cls === "number") fact(dl, "FID (classifier)", `${num(q.fid_cls)} (floor ${num(q.fid_cls_floor)})`);
  fact(dl, "precision", pct(q.precision));
  fact(dl, "recall", pct(q.recall));
  const t = man.training || {};
  if (t.epochs) fact(dl, "training", `${t.epochs} epochs, ${Math.round((t.duration_s || 0) / 60)} min on ${t.device}`);
  try {
    const res = await api(`/v1/models/${encodeURIComponent(m.id)}/grid`);
    const blob = await res.blob();
    if (current() !== m) return;
    const old = $("card-grid").src;
    $("card-grid").src = URL.createObjectURL(blob);
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
    $("card-grid-figure").hidden = false;
  } catch (_) { /* no grid for this model: the card goes without */ }
}

// -- requests for each view ------------------------------------------------------------------

function baseParams() {
  const params = new URLSearchParams({ model: $("model").value });
  if (!$("klass").disabled && $("klass").value !== "") params.set("class", $("klass").value);
  return params;
}

function keyHeader() { return apiKey() ? ` -H "Authorization: Bearer $IMAGEGEN_API_KEY"` : ""; }

function getPlan() {
  const params = baseParams();
  params.set("seed", $("seed").value);
  if (state.view === "interpolate") {
    const p = new URLSearchParams({ model: params.get("model"), seed_a: $("seed").value, seed_b: $("seed-b").value, steps: $("steps").value });
    if (params.has("class")) p.set("class", params.get("class"));
    return { path: `/interpolate?${p}`, file: `${p.get("model")}-${p.get("seed_a")}-${p.get("seed_b")}.png` };
  }
  if ($("n").value !== "1") params.set("n", $("n").value);
  return { path: `/sample?${params}`, file: `${params.get("model")}-seed${params.get("seed")}.png` };
}

function gridPlan() {
  const m = current();
  const seed = Number($("seed").value);
  const cols = Number($("cols").value);
  const classes = m.conditional ? m.manifest.class_names.map((_, i) => i) : [null];
  const seeds = [];
  const labels = [];
  for (const c of classes) {
    for (let j = 0; j < cols; j++) { seeds.push(seed + j); labels.push(c); }
  }
  const body = { model: m.id, seeds };
  if (m.conditional) body.labels = labels;
  return { body, classes, cols };
}

function setCurl(text) {
  $("curl").textContent = text;
  $("copy-curl").disabled = !text;
  state.curlFor = state.generation;
}

/** A word for the shell: as is where that is safe, else single-quoted. */
function shellWord(word) { return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, "'\\''")}'`; }

function clearReconstruction() {
  $("recon-in").removeAttribute("src");
  $("recon-out").removeAttribute("src");
  $("recon-caption").textContent = "reconstruction";
}

/** Removes what earlier requests drew, so that an error never stands beside output (or a
 *  download) that no longer matches the controls. */
function clearOutput() {
  if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
  state.objectUrl = null;
  $("img").removeAttribute("src");
  $("interp-img").removeAttribute("src");
  $("grid").replaceChildren();
  clearReconstruction();
  $("download").hidden = true;
  $("download").removeAttribute("href");
}

function showImage(img, blob, file) {
  if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
  state.objectUrl = URL.createObjectURL(blob);
  img.src = state.objectUrl;
  $("download").href = state.objectUrl;
  $("download").download = file;
  $("download").hidden = false;
}

async function renderGet(img) {
  const plan = getPlan();
  setCurl(`curl -o ${plan.file}${keyHeader()} '${location.origin}${plan.path}'`);
  const blob = await (await api(plan.path)).blob();
  return () => showImage(img, blob, plan.file);
}

async function renderGrid() {
  const plan = gridPlan();
  const json = JSON.stringify(plan.body);
  setCurl(`curl${keyHeader()} -H 'Content-Type: application/json' -d '${json}' ${location.origin}/v1/images`);
  const res = await api("/v1/images", { method: "POST", headers: { "Content-Type": "application/json" }, body: json });
  const body = await res.json();
  return () => {
    const grid = $("grid");
    grid.replaceChildren();
    grid.style.gridTemplateColumns = `auto repeat(${plan.cols}, minmax(0, var(--cell)))`;
    const { class_names: names, image } = current().manifest;
    plan.classes.forEach((c, row) => {
      const label = document.createElement("span");
      label.className = "row-label";
      label.textContent = c === null ? "" : names[c];
      grid.appendChild(label);
      for (let j = 0; j < plan.cols; j++) {
        const item = body.images[row * plan.cols + j];
        const img = document.createElement("img");
        img.alt = `seed ${item.seed}` + (c === null ? "" : `, class ${names[c]}`);
        img.title = img.alt;
        img.style.aspectRatio = `${image.width} / ${image.height}`; // square cells before the pixels arrive
        img.src = `data:image/png;base64,${item.png_base64}`;
        grid.appendChild(img);
      }
    });
    $("download").hidden = true;
  };
}

async function renderReconstruct() {
  const m = current();
  const params = baseParams();
  params.set("format", "json");
  if (!hasEncoder(m)) {
    const vaes = Object.values(state.models).filter((x) => x.state === "ready" && hasEncoder(x)).map((x) => x.id);
    throw new ApiError(422, "no_encoder", `${m.id} has no encoder; reconstruction works with ${vaes.join(", ")}`);
  }
  const file = state.upload && state.upload.file;
  // The uploaded file by its name, or until there is one a name that says what to send.
  const sent = file ? file.name : `${m.dataset}-image.png`;
  const type = (file && file.type) || "image/png";
  setCurl(`curl -o ${m.id}-reconstruction.png${keyHeader()} -H 'Content-Type: ${type}' --data-binary ${shellWord(`@${sent}`)} '${location.origin}/v1/reconstruct?${baseParams()}'`);
  if (!file) {
    return () => { clearReconstruction(); $("status").textContent = `Drop a ${m.dataset} image to reconstruct it.`; };
  }
  const res = await api(`/v1/reconstruct?${params}`, {
    method: "POST", headers: { "Content-Type": file.type || "application/octet-stream" }, body: file,
  });
  const body = await res.json();
  return () => {
    $("recon-in").src = `data:image/png;base64,${body.input_png_base64}`;
    $("recon-out").src = `data:image/png;base64,${body.png_base64}`;
    $("recon-caption").textContent = body.class_name === null ? "reconstruction"
      : `reconstruction as class ${body.class_name}${body.class_given ? "" : " (closest)"}`;
    $("download").href = $("recon-out").src;
    $("download").download = `${m.id}-reconstruction.png`;
    $("download").hidden = false;
  };
}

async function render() {
  const generation = ++state.generation;
  writeHash();
  showError(null);
  const m = current();
  if (!m) return;
  $("stage").classList.add("loading");
  $("status").textContent = "Generating…";
  try {
    let apply;
    if (state.view === "grid") apply = await renderGrid();
    else if (state.view === "reconstruct") apply = await renderReconstruct();
    else if (state.view === "interpolate") {
      if (!hasLatent(m)) throw new ApiError(422, "no_latent", `${m.id} takes only a class: pick a model with a latent to interpolate`);
      apply = await renderGet($("interp-img"));
    } else apply = await renderGet($("img"));
    if (generation !== state.generation) return; // a newer request has started
    $("status").textContent = "";
    apply();
  } catch (err) {
    if (generation !== state.generation) return;
    $("status").textContent = "";
    clearOutput();
    // The curl line stays where it is the request that failed; a refusal made here sent none.
    if (state.curlFor !== generation) setCurl("");
    showError(err);
  } finally {
    if (generation === state.generation) $("stage").classList.remove("loading");
  }
}

function schedule() {
  clearTimeout(state.timer);
  $("stage").classList.add("loading");
  state.timer = setTimeout(render, DEBOUNCE_MS);
}

function showError(err) {
  const box = $("error");
  box.hidden = !err;
  box.textContent = err ? String(err) : "";
}

function showKeyBox(show) { $("keybox").hidden = !show; }

function setView(view) {
  state.view = view;
  for (const button of document.querySelectorAll("#views button")) {
    button.setAttribute("aria-selected", String(button.dataset.view === view));
  }
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== view;
  for (const el of document.querySelectorAll(".for-image")) el.hidden = view !== "image";
  for (const el of document.querySelectorAll(".for-interpolate")) el.hidden = view !== "interpolate";
  for (const el of document.querySelectorAll(".for-grid")) el.hidden = view !== "grid";
  if (view !== "image" && view !== "interpolate") $("download").hidden = true;
}

// -- wiring ------------------------------------------------------------------------------------

function upload(file) {
  if (!file) return;
  const m = current();
  state.upload = { file, dataset: m ? m.dataset : "" };
  showUpload(null);
  render();
}

function modelChanged() {
  fillClasses();
  fitUpload();
  showCard();
}

function wire() {
  $("model").addEventListener("change", () => { modelChanged(); schedule(); });
  $("klass").addEventListener("change", () => showNotice(null));
  for (const id of ["klass", "seed", "n", "seed-b", "steps", "cols"]) {
    $(id).addEventListener("input", schedule);
    $(id).addEventListener("change", schedule);
  }
  $("controls").addEventListener("submit", (e) => { e.preventDefault(); render(); });
  $("random").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 2 ** 31); schedule(); });
  for (const button of document.querySelectorAll("#views button")) {
    button.addEventListener("click", () => { setView(button.dataset.view); schedule(); });
  }
  $("copy-curl").addEventListener("click", async () => {
    try { await navigator.clipboard.writeText($("curl").textContent); $("status").textContent = "curl command copied"; }
    catch (_) { getSelection().selectAllChildren($("curl")); $("status").textContent = "select and copy the command below"; }
  });
  $("share").addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(location.href); $("status").textContent = "link copied"; }
    catch (_) { $("status").textContent = location.href; }
  });
  $("key-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("key").value.trim());
    await start();
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    upload(e.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", () => upload($("file").files[0]));
  window.addEventListener("hashchange", () => { applyState(readHash()); showCard(); render(); });
}

async function start() {
  try {
    await loadModels();
  } catch (err) {
    showError(err);
    return;
  }
  showKeyBox(false);
  applyState(readHash());
  showCard();
  await render();
}

wire();
start();
