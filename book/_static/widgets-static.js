/* Offline renderer of saved ipywidgets state for the static book.
 *
 * myst-nb writes the notebook's widget state into the page as
 *   <script type="application/vnd.jupyter.widget-state+json">{"state": {...}}</script>
 * and each widget output as
 *   <script type="application/vnd.jupyter.widget-view+json">{"model_id": "..."}</script>.
 * The usual renderer (@jupyter-widgets/html-manager) is loaded from a CDN; this book must build and
 * read offline, so this file draws the few widget models hafvt's notebooks use (boxes, HTML, labels,
 * dropdowns, sliders and number fields, tabs, outputs) from that saved state. Nothing here runs Python: choosing another value
 * needs the notebook and a live kernel, and the page says so.
 */
(function () {
  "use strict";
  if (window.hafvtStaticWidgets) return;  /* included once per page, however many times it is listed */
  window.hafvtStaticWidgets = true;
  var STATE = "application/vnd.jupyter.widget-state+json";
  var VIEW = "application/vnd.jupyter.widget-view+json";

  function loadState() {
    var state = {};
    document.querySelectorAll('script[type="' + STATE + '"]').forEach(function (tag) {
      try {
        var parsed = JSON.parse(tag.textContent);
        Object.assign(state, parsed.state || {});
      } catch (e) {
        console.warn("hafvt widgets: unreadable widget state", e);
      }
    });
    return state;
  }

  function ref(value) {
    return typeof value === "string" && value.indexOf("IPY_MODEL_") === 0 ? value.slice(10) : value;
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function applyLayout(node, state, models) {
    var layout = models[ref(state.layout)];
    if (!layout || !layout.state) return;
    var s = layout.state;
    ["width", "height", "margin", "padding", "border", "flex", "align_items", "justify_content"].forEach(function (k) {
      if (s[k]) node.style[k.replace(/_([a-z])/g, function (m, c) { return c.toUpperCase(); })] = s[k];
    });
  }

  function renderOutputs(outputs) {
    var box = el("div", "hafvt-w-output");
    (outputs || []).forEach(function (out) {
      var data = out.data || {};
      if (data["text/html"]) {
        var d = el("div");
        d.innerHTML = [].concat(data["text/html"]).join("");
        box.appendChild(d);
      } else if (data["image/png"]) {
        var img = el("img");
        img.src = "data:image/png;base64," + data["image/png"];
        img.alt = "widget output";
        box.appendChild(img);
      } else if (data["text/plain"] || out.text) {
        box.appendChild(el("pre", null, [].concat(data["text/plain"] || out.text).join("")));
      }
    });
    return box;
  }

  function render(id, models, depth) {
    var model = models[id];
    if (!model || depth > 50) {
      var missing = el("div", "hafvt-w-missing", "[widget " + id + " not in the saved state]");
      return missing;
    }
    var name = model.model_name, s = model.state || {};
    var node;
    var kids = function () { return (s.children || []).map(function (c) { return render(ref(c), models, depth + 1); }); };
    if (name === "VBoxModel" || name === "BoxModel" || name === "GridBoxModel") {
      node = el("div", "hafvt-w-vbox");
      kids().forEach(function (k) { node.appendChild(k); });
    } else if (name === "HBoxModel") {
      node = el("div", "hafvt-w-hbox");
      kids().forEach(function (k) { node.appendChild(k); });
    } else if (name === "HTMLModel" || name === "HTMLMathModel") {
      node = el("div", "hafvt-w-html");
      if (s.description) node.appendChild(el("span", "hafvt-w-desc", s.description));
      var body = el("div");
      body.innerHTML = s.value || "";
      node.appendChild(body);
    } else if (name === "LabelModel") {
      node = el("span", "hafvt-w-label", s.value || "");
    } else if (name === "DropdownModel" || name === "SelectModel" || name === "ToggleButtonsModel" || name === "RadioButtonsModel") {
      node = el("div", "hafvt-w-select");
      if (s.description) node.appendChild(el("label", "hafvt-w-desc", s.description + " "));
      var sel = el("select");
      sel.disabled = true;
      sel.title = "static page: run the notebook with a kernel to choose another value";
      (s._options_labels || []).forEach(function (lab, i) {
        var opt = el("option", null, lab);
        opt.value = String(i);
        if (i === s.index) opt.selected = true;
        sel.appendChild(opt);
      });
      node.appendChild(sel);
      node.appendChild(el("span", "hafvt-w-note", " (static page: the saved view; run the notebook to choose another)"));
    } else if (name === "TabModel" || name === "AccordionModel" || name === "StackModel") {
      node = el("div", "hafvt-w-tabs");
      var titles = s.titles || s._titles || {};
      var bar = el("div", "hafvt-w-tabbar");
      var panes = [];
      var selected = s.selected_index || 0;
      kids().forEach(function (k, i) {
        var t = Array.isArray(titles) ? titles[i] : titles[String(i)];
        var b = el("button", i === selected ? "hafvt-w-tab hafvt-w-active" : "hafvt-w-tab", t || ("tab " + (i + 1)));
        b.type = "button";
        var pane = el("div", "hafvt-w-pane");
        pane.appendChild(k);
        pane.style.display = i === selected ? "" : "none";
        panes.push(pane);
        b.addEventListener("click", function () {  /* switching between saved panes needs no kernel */
          panes.forEach(function (p, j) { p.style.display = j === i ? "" : "none"; });
          bar.querySelectorAll("button").forEach(function (x, j) { x.className = j === i ? "hafvt-w-tab hafvt-w-active" : "hafvt-w-tab"; });
        });
        bar.appendChild(b);
      });
      node.appendChild(bar);
      panes.forEach(function (p) { node.appendChild(p); });
    } else if (/^(Float|Int|BoundedFloat|BoundedInt)(Slider|Text)Model$/.test(name)) {
      /* a number control, drawn at its saved value and disabled: moving it needs a live kernel */
      node = el("div", "hafvt-w-number");
      if (s.description) node.appendChild(el("label", "hafvt-w-desc", s.description + " "));
      var slider = /Slider/.test(name);
      var input = el("input");
      input.type = slider ? "range" : "number";
      if (s.min !== undefined) input.min = String(s.min);
      if (s.max !== undefined) input.max = String(s.max);
      if (s.step !== undefined) input.step = String(s.step);
      input.value = String(s.value);
      input.disabled = true;
      input.title = "static page: run the notebook with a kernel to change it";
      node.appendChild(input);
      if (slider) node.appendChild(el("span", "hafvt-w-readout", " " + s.value));
    } else if (name === "OutputModel") {
      node = renderOutputs(s.outputs);
    } else {
      node = el("div", "hafvt-w-missing", "[" + name + ": shown with a live kernel only]");
    }
    node.setAttribute("data-widget-model", name);
    applyLayout(node, s, models);
    return node;
  }

  function main() {
    var models = loadState();
    var views = document.querySelectorAll('script[type="' + VIEW + '"]');
    views.forEach(function (tag) {
      var view;
      try { view = JSON.parse(tag.textContent); } catch (e) { return; }
      var root = el("div", "hafvt-widget-static");
      root.appendChild(render(view.model_id, models, 0));
      tag.parentNode.insertBefore(root, tag.nextSibling);
    });
  }

  var css = ".hafvt-widget-static{border:1px solid #e3e3e3;border-radius:6px;padding:8px;margin:.5em 0;overflow-x:auto}" +
    ".hafvt-w-vbox{display:flex;flex-direction:column;gap:6px}.hafvt-w-hbox{display:flex;flex-direction:row;gap:6px;flex-wrap:wrap}" +
    ".hafvt-w-note{color:#777;font-size:11px}.hafvt-w-missing{color:#a00;font-size:12px}" +
    ".hafvt-w-tab{border:1px solid #ccc;background:#f6f6f6;padding:2px 10px;margin-right:2px;cursor:pointer}" +
    ".hafvt-w-active{background:#fff;border-bottom-color:#fff;font-weight:bold}";
  var style = document.createElement("style");
  style.textContent = css;
  document.head.appendChild(style);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", main);
  else main();
})();
