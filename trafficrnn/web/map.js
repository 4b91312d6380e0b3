// The page logic of a trafficrnn forecast map (see trafficrnn/webmap.py for the data it reads).
// One Leaflet image overlay per lead, all on the same lat/lon bounds; a slider shows one at a time.
// The value under the mouse: lat/lon -> Web Mercator metres (Leaflet's EPSG:3857 projection) ->
// a pixel of the lookup grid (the forecast grid warped to EPSG:3857, nearest) -> the forecast
// cell it shows -> that cell's value at the shown lead.
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("trafficrnn-data").textContent);
  var $ = function (id) { return document.getElementById(id); };

  var bounds = L.latLngBounds(
    [cfg.bounds.south, cfg.bounds.west],
    [cfg.bounds.north, cfg.bounds.east]
  );
  var map = L.map("map", { zoomSnap: 0.25, attributionControl: true });
  // keep the grid clear of the panel on the right where there is room
  var right = window.innerWidth > 640 ? 330 : 10;
  map.fitBounds(bounds, { paddingTopLeft: [10, 10], paddingBottomRight: [right, 10] });
  L.control.scale({ imperial: false }).addTo(map);

  var layers = cfg.leads.map(function (lead) {
    return L.imageOverlay(lead.image, bounds, {
      opacity: cfg.opacity,
      className: "trafficrnn-overlay",
      alt: cfg.title + ", lead " + lead.label,
    });
  });

  // the lookup grid, run-length coded per row: [cell, count, cell, count, ...]; -1 outside the grid
  var lk = cfg.lookup;
  var index = new Int32Array(lk.width * lk.height);
  lk.rows.forEach(function (runs, r) {
    var at = r * lk.width;
    for (var k = 0; k < runs.length; k += 2) {
      index.fill(runs[k], at, at + runs[k + 1]);
      at += runs[k + 1];
    }
  });

  function cellAt(latlng) {
    var p = L.CRS.EPSG3857.project(L.latLng(latlng));
    var col = Math.floor((p.x - lk.x0) / lk.dx);
    var row = Math.floor((lk.y0 - p.y) / lk.dy);
    if (row < 0 || col < 0 || row >= lk.height || col >= lk.width) return null;
    var cell = index[row * lk.width + col];
    if (cell < 0) return null;
    return { cell: cell, row: Math.floor(cell / cfg.grid.width), col: cell % cfg.grid.width };
  }

  var current = -1;
  function valueAt(latlng, lead) {
    var where = cellAt(latlng);
    if (!where) return null;
    var i = lead === undefined ? current : lead;
    where.value = cfg.leads[i].values[where.cell];
    where.lead = i;
    return where;
  }

  function format(v) {
    if (v === null || v === undefined) return "no data";
    return Number(v.toPrecision(4)).toString() + (cfg.units ? " " + cfg.units : "");
  }

  var lastLatLng = null;
  function describe(latlng) {
    var hit = latlng ? valueAt(latlng) : null;
    if (!hit) return latlng ? "outside the forecast grid" : "Move the mouse over the grid to read a cell.";
    return "row " + hit.row + ", col " + hit.col + ": " + format(hit.value);
  }
  // textContent only: the units and labels come from the file
  function showReadout() { $("readout").textContent = describe(lastLatLng); }

  function setLead(i) {
    i = Math.max(0, Math.min(layers.length - 1, Number(i)));
    if (i === current) return;
    if (current >= 0) map.removeLayer(layers[current]);
    layers[i].addTo(map);
    current = i;
    $("lead").value = String(i);
    var lead = cfg.leads[i];
    $("lead-label").textContent = lead.label + (lead.valid ? " (valid " + lead.valid + ")" : "");
    showReadout();
  }

  // the panel: title, slider, opacity, basemap, colour bar
  $("title").textContent = cfg.title;
  $("subtitle").textContent = cfg.subtitle;
  $("units").textContent = cfg.units || "";
  $("lead").max = String(layers.length - 1);
  $("lead").addEventListener("input", function (e) { setLead(e.target.value); });
  $("opacity").value = String(cfg.opacity);
  $("opacity").addEventListener("input", function (e) {
    layers.forEach(function (layer) { layer.setOpacity(Number(e.target.value)); });
  });
  $("colorbar").style.background = cfg.colorbar.gradient;
  cfg.colorbar.ticks.forEach(function (tick) {
    var span = document.createElement("span");
    span.style.left = (100 * tick.at) + "%";
    span.textContent = tick.label;
    $("ticks").appendChild(span);
  });

  // the OSM basemap is built only when asked for: offline, the page requests nothing
  var basemap = null;
  function setBasemap(on) {
    if (on && !basemap) {
      basemap = L.tileLayer(cfg.basemap.url, {
        maxZoom: 19,
        attribution: cfg.basemap.attribution,
      });
    }
    if (basemap && on) basemap.addTo(map).bringToBack();
    if (basemap && !on) map.removeLayer(basemap);
    $("basemap").checked = on;
  }
  $("basemap").addEventListener("change", function (e) { setBasemap(e.target.checked); });

  var panel = $("panel");
  L.DomEvent.disableClickPropagation(panel);
  L.DomEvent.disableScrollPropagation(panel);

  map.on("mousemove", function (e) { lastLatLng = e.latlng; showReadout(); });
  map.on("mouseout", function () { lastLatLng = null; showReadout(); });
  map.on("click", function (e) {
    var box = document.createElement("div");
    box.textContent = cfg.leads[current].label + ": " + describe(e.latlng);
    L.popup().setLatLng(e.latlng).setContent(box).openOn(map);
  });

  setLead(0);
  setBasemap(Boolean(cfg.basemap.on));
  // for tests and notebooks: the map, its layers (one per lead) and the lookup
  window.trafficrnn = {
    map: map,
    layers: layers,
    bounds: bounds,
    setLead: setLead,
    currentLead: function () { return current; },
    valueAt: function (lat, lng, lead) { return valueAt([lat, lng], lead); },
  };
})();
