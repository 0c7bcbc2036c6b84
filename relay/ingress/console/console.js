// The payrelay console (relay/ingress/console). Plain JavaScript with no library and no build
// step: it is served as it is, by the relay itself, so there is nothing to vendor, pin or
// keep patched. Everything it shows comes from the JSON API under /api/ (the answers of
// `relay ... --json`), signed in by the session cookie; every value is written with
// textContent (the DOM helpers below never take markup), so data cannot become HTML.
(function () {
  "use strict";

  var page = document.body.getAttribute("data-page");
  if (page === "sign-in") {
    // Signed in already, but the cookie (SameSite=Strict) was not sent because a link on
    // another site led here: a same-site request carries it, so look once and move on.
    fetch("/api/sinks", {credentials: "same-origin", cache: "no-store"}).then(function (r) {
      if (r.ok) location.replace("/status" + location.hash);
    }, function () {});
    return;
  }
  if (page !== "console") return;

  var REFRESH_MS = 5000;
  var STATES = document.body.getAttribute("data-states").split(" ");
  var current = {view: null, arg: ""};
  var lastSinks = [];
  var timer = null;

  // --- helpers ------------------------------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  function h(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      var value = attrs[name];
      if (value === null || value === undefined || value === false) return;
      if (name === "text") node.textContent = String(value);
      else if (name === "class") node.className = value;
      else if (name === "onclick") node.addEventListener("click", value);
      else node.setAttribute(name, value === true ? "" : String(value));
    });
    append(node, children);
    return node;
  }

  function append(node, children) {
    [].concat(children === undefined ? [] : children).forEach(function (child) {
      if (child === null || child === undefined || child === false) return;
      if (Array.isArray(child)) append(node, child);
      else node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    });
    return node;
  }

  function fill(node, children) {
    node.textContent = "";
    node.removeAttribute("aria-busy");
    return append(node, children);
  }

  // Amounts keep their exact digits: the API writes decimals as sent (0.000010), which a
  // plain JSON.parse would round to a float; the reviver keeps the source text instead
  // wherever the float would print differently (browsers without source access: floats).
  function parse(text) {
    return JSON.parse(text, function (key, value, context) {
      if (typeof value === "number" && context && typeof context.source === "string" &&
          String(value) !== context.source) return context.source;
      return value;
    });
  }

  function ApiError(status, error, detail) {
    this.status = status;
    this.error = error;
    this.message = detail || error || "HTTP " + status;
  }

  function api(path, body) {
    var init = {credentials: "same-origin", cache: "no-store", headers: {Accept: "application/json"}};
    if (body !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = parse(text); } catch (e) { data = null; }
        if (response.status === 401) location.replace("/status"); // the session ended
        if (!response.ok) {
          throw new ApiError(response.status, data && data.error, data && data.detail);
        }
        return data;
      });
    });
  }

  function notice(text, isError) {
    var box = $("notice");
    box.className = isError ? "error" : "";
    box.textContent = text;
  }

  function when(iso) {
    if (!iso) return h("span", {class: "muted", text: "never"});
    var shown = String(iso).replace("T", " ").replace(/\.\d+/, "").replace(/Z$|\+00:00$/, " UTC");
    return h("time", {datetime: iso, text: shown});
  }

  function unix(seconds) {
    return seconds ? new Date(Number(seconds) * 1000).toISOString() : null;
  }

  function human(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    seconds = Math.max(0, Number(seconds));
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 120) return Math.round(seconds) + " s";
    if (seconds < 7200) return Math.round(seconds / 60) + " min";
    if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
    return (seconds / 86400).toFixed(1) + " d";
  }

  function pill(word, kind) { return h("span", {class: "pill " + (kind || word), text: word}); }

  function facts(pairs) {
    var dl = h("dl", {class: "facts"});
    pairs.forEach(function (pair) {
      if (pair[1] === null || pair[1] === undefined || pair[1] === "") return;
      append(dl, [h("dt", {text: pair[0]}), h("dd", {}, pair[1])]);
    });
    return dl;
  }

  function idText(value) { return h("span", {class: "id", text: value}); }

  function paymentLink(eventId, label) {
    return h("a", {href: "#payment/" + encodeURIComponent(eventId), class: "id", text: label || eventId});
  }

  // A button that runs `action` (a promise) once at a time, then says what happened.
  function actionButton(label, hidden, action, extraClass) {
    var button = h("button", {type: "button", class: extraClass || null}, [label, hidden ? h("span", {class: "vh", text: " " + hidden}) : null]);
    button.addEventListener("click", function () {
      if (button.disabled) return;
      button.disabled = true;
      Promise.resolve().then(action).then(function (message) {
        if (message) notice(message);
      }, function (error) {
        notice(label + " failed: " + error.message, true);
      }).then(function () { button.disabled = false; });
    });
    return button;
  }

  function failure(box, error) {
    fill(box, h("p", {class: "banner", role: "alert", text: error.message}));
  }

  function options(select, names) {
    var chosen = select.value;
    while (select.options.length > 1) select.remove(1);
    names.forEach(function (name) { select.appendChild(h("option", {text: name})); });
    select.value = names.indexOf(chosen) >= 0 ? chosen : "";
  }

  // --- overview -----------------------------------------------------------------------------

  function figure(label, value, key, kind) {
    return h("div", {class: "card figure" + (kind ? " " + kind : "")}, [
      h("div", {class: "label", text: label}),
      h("div", {class: "num", "data-k": key, text: value})
    ]);
  }

  function sinkWord(sink, health) {
    if (sink.state === "paused") {
      var word = "paused" + (sink.held ? " (" + sink.held + " held)" : "");
      return pill(sink.paused_until ? word + " until " + sink.paused_until.replace("T", " ") : word, "paused");
    }
    if (sink.state === "gone") return pill("gone (404/410)", "gone");
    if (health && !health.healthy) return pill("failing", "bad");
    if (!sink.last_ok_at) return pill("idle", "idle");
    return pill("ok", "ok");
  }

  function setSink(name, verb) {
    return api("/api/sinks/" + encodeURIComponent(name) + "/" + verb, {}).then(function (answer) {
      refreshOverview();
      if (verb === "pause") return name + " paused: its deliveries wait until it is resumed.";
      return name + " resumed: " + answer.released + " held deliveries released.";
    });
  }

  function sinkCard(sink, health) {
    var latency = health && health.latency;
    var verb = sink.state === "paused" ? "Resume" : "Pause";
    var button = sink.configured || verb === "Resume"
      ? actionButton(verb, sink.name, function () { return setSink(sink.name, verb.toLowerCase()); })
      : null;
    if (button) button.setAttribute("data-key", "sink:" + sink.name);
    return h("article", {class: "card sink", "data-sink": sink.name, "data-state": sink.state}, [
      h("h3", {}, [idText(sink.name), sink.type ? h("span", {class: "muted", text: sink.type}) : null,
        sink.configured ? null : h("span", {class: "muted", text: "(not in the config)"}),
        sinkWord(sink, health)]),
      h("dl", {class: "counts"}, [
        h("div", {}, [h("dt", {text: "Delivered"}), h("dd", {"data-k": "delivered", text: sink.delivered})]),
        h("div", {}, [h("dt", {text: "Retrying"}), h("dd", {"data-k": "retrying", text: sink.retrying})]),
        h("div", {}, [h("dt", {text: "Failed"}), h("dd", {"data-k": "failed", text: sink.failed})]),
        h("div", {}, [h("dt", {text: "Held"}), h("dd", {"data-k": "held", text: sink.held})])
      ]),
      latency && latency.count ? h("div", {class: "line", text: "Receipt to delivery: p50 " + human(latency.p50) + " · p95 " + human(latency.p95)}) : null,
      h("div", {class: "line"}, ["Last success ", when(sink.last_ok_at)]),
      sink.last_error ? h("div", {class: "line err", "data-k": "last_error"}, ["Last error: " + sink.last_error + " · ", when(sink.last_error_at)]) : null,
      h("div", {class: "actions"}, [h("span", {class: "muted", text: "State: " + sink.state}), button])
    ]);
  }

  function overallState(status) {
    if (!status.workers.length) return ["No worker running", "down"];
    if (Object.keys(status.sinks).some(function (n) { return status.sinks[n].gone; })) return ["A sink is gone", "warn"];
    if ((status.alerts || []).length) return ["Alerts firing", "warn"];
    var unhealthy = Object.keys(status.sinks).some(function (n) { return !status.sinks[n].healthy; });
    if (unhealthy || status.dlq_size || status.degraded) return ["Degraded", "warn"];
    return ["All systems normal", "ok"];
  }

  function sourcesList(status) {
    var names = Object.keys(status.sources);
    if (!names.length) return h("p", {class: "muted", text: "No source is configured."});
    return h("ul", {class: "list"}, names.map(function (name) {
      var source = status.sources[name];
      var outcomes = Object.keys(source.inbound).sort().map(function (k) { return k + " " + source.inbound[k]; });
      return h("li", {class: "item", "data-source": name}, [
        h("div", {class: "head"}, [h("strong", {class: "id", text: name}),
          source.configured ? null : h("span", {class: "muted", text: "(not in the config)"})]),
        h("div", {class: "line", text: "Received: " + (outcomes.join(" · ") || "nothing yet")})
      ]);
    }));
  }

  function workersList(status) {
    if (!status.workers.length) {
      return h("p", {class: "banner", text: "No worker is running: webhooks are stored but nothing is delivered."});
    }
    return h("ul", {class: "list"}, status.workers.map(function (w) {
      return h("li", {class: "item"}, [h("div", {class: "head"}, [h("strong", {class: "id", text: w.id}),
        h("span", {class: "muted", text: w.running + " running · " + w.complete + " completed"})]),
        h("div", {class: "line"}, ["Up since ", when(unix(w.started_at)), " · last beat ", when(unix(w.at))])]);
    }));
  }

  function renderOverview(status, sinks) {
    var q = status.queue;
    var banners = (status.degraded_reasons || []).concat(status.warnings || []).map(function (text) {
      return h("p", {class: "banner warn", text: text});
    });
    var alerts = (status.alerts || []).map(function (a) {
      return h("li", {class: "item"}, [h("div", {class: "head"}, [pill("firing", "bad"),
        h("strong", {text: a.rule}), h("span", {class: "id", text: a.subject})]),
        h("div", {class: "line", text: a.summary})]);
    });
    return [
      banners,
      alerts.length ? [h("h3", {class: "sub", text: "Alerts"}), h("ul", {class: "list alerts"}, alerts)] : null,
      h("div", {class: "grid", "aria-label": "Queue", role: "group"}, [
        figure("Waiting", q.waiting, "waiting"),
        figure("Scheduled retries", q.scheduled, "scheduled"),
        figure("In progress", q.in_progress, "in_progress"),
        figure("Held (paused)", q.held, "held"),
        figure("Oldest waiting", human(q.oldest_waiting_age_s), "oldest", q.oldest_waiting_age_s > 60 ? "warn" : ""),
        figure("Dead letters", status.dlq_size, "dlq", status.dlq_size ? "bad" : ""),
        figure("Workers", status.workers.length, "workers", status.workers.length ? "" : "bad")
      ]),
      h("h3", {class: "sub", text: "Sinks"}),
      sinks.length ? h("div", {class: "cards"}, sinks.map(function (s) { return sinkCard(s, status.sinks[s.name]); }))
        : h("p", {class: "muted", text: "No sink is configured."}),
      h("h3", {class: "sub", text: "Sources"}), sourcesList(status),
      h("h3", {class: "sub", text: "Workers"}), workersList(status)
    ];
  }

  function refreshOverview() {
    clearTimeout(timer);
    return Promise.all([api("/api/status"), api("/api/sinks")]).then(function (answers) {
      var status = answers[0];
      lastSinks = answers[1].sinks;
      var state = overallState(status);
      var overall = $("overall");
      overall.className = "pill " + state[1];
      overall.textContent = state[0];
      $("offline").hidden = true;
      fillFilters(status);
      if (current.view === "overview") {
        var focused = document.activeElement && document.activeElement.getAttribute("data-key");
        fill($("overview"), renderOverview(status, lastSinks));
        var again = focused && document.querySelector('[data-key="' + CSS.escape(focused) + '"]');
        if (again) again.focus();
      }
      document.body.setAttribute("data-live", "1");
    }, function (error) {
      if (error instanceof ApiError && current.view === "overview") failure($("overview"), error);
      else $("offline").hidden = false;
    }).then(function () {
      clearTimeout(timer); // one timer, however many refreshes overlapped
      timer = setTimeout(tick, REFRESH_MS);
    });
  }

  function tick() {
    if (document.hidden) timer = setTimeout(tick, REFRESH_MS); // a hidden tab asks nothing
    else refreshOverview();
  }

  function fillFilters(status) {
    var sinkNames = lastSinks.map(function (s) { return s.name; });
    var sourceNames = Object.keys(status.sources);
    options($("events-form").elements.source, sourceNames);
    options($("events-form").elements.sink, sinkNames);
    options($("dead-letters-form").elements.sink, sinkNames);
    options($("rejections-form").elements.source, sourceNames);
  }

  // --- a payment's timeline -----------------------------------------------------------------

  function attemptItem(a) {
    var parts = ["Attempt " + a.number + (a.replay ? " (replay " + a.replay + ")" : ""), " · ", when(a.at),
      " · ", h("strong", {text: a.outcome}), " · ", a.status ? "HTTP " + a.status : "no HTTP answer",
      " · ", a.duration_ms + " ms"];
    if (a.next_attempt_at) parts.push(" · next attempt ", when(a.next_attempt_at));
    return h("li", {class: "attempt"}, [h("div", {}, parts),
      a.answer ? h("pre", {class: "answer", "aria-label": "answer excerpt", text: a.answer}) : null]);
  }

  function deliveryBlock(event, d, reload) {
    var replay = d.state === "failed"
      ? actionButton("Replay", event.id + " to " + d.sink, function () {
          return api("/api/replay", {ids: [event.id], sinks: [d.sink]}).then(function (answer) {
            reload();
            return "Replay queued: " + answer.queued + " delivery to " + d.sink + ".";
          });
        })
      : null;
    return h("section", {class: "delivery", "data-sink": d.sink, "data-state": d.state}, [
      h("h4", {}, [idText(d.sink), pill(d.state)]),
      d.attempts.length ? h("ol", {class: "attempts"}, d.attempts.map(attemptItem))
        : h("p", {class: "line", text: "No attempt yet."}),
      d.rate_limit_wait ? h("p", {class: "line"}, ["Waiting for the sink's rate limit since ", when(d.rate_limit_wait.at)]) : null,
      replay ? h("div", {class: "actions"}, replay) : null
    ]);
  }

  function eventItem(e, reload) {
    var p = e.payment;
    var amount = p.amount === null || p.amount === undefined ? null : p.amount + (p.currency ? " " + p.currency : "");
    var received = p.amount_received === null || p.amount_received === undefined ? null
      : p.amount_received + (p.currency ? " " + p.currency : "");
    return h("li", {class: "event", "data-event": e.id}, [
      h("div", {class: "head"}, [h("span", {class: "seq", text: e.sequence === null ? "#?" : "#" + e.sequence}),
        h("strong", {text: e.type}), e.stale ? pill("stale", "stale") : null, when(e.accepted_at)]),
      facts([["Status", p.status], ["Amount", amount], ["Received", received],
        ["Stale", e.stale ? "yes: an older status than one already relayed" : "no"],
        ["Tx hash", p.tx_hash ? idText(p.tx_hash) : null], ["Event", idText(e.id)],
        ["Inbound", e.inbound_id ? idText(e.inbound_id) : null]]),
      h("div", {class: "deliveries"}, e.deliveries.map(function (d) { return deliveryBlock(e, d, reload); }))
    ]);
  }

  function paymentCard(payment, reload) {
    return h("article", {class: "card payment", "data-payment": payment.payment_id || ""}, [
      h("h3", {}, ["Payment ", idText(payment.payment_id || "(no id)"), h("span", {class: "muted", text: " · " + payment.source})]),
      facts([["Reference", payment.reference ? idText(payment.reference) : null],
        ["Status now", payment.status], ["Events", String(payment.events.length)]]),
      h("ol", {class: "timeline", "aria-label": "events in the order the relay accepted them"},
        payment.events.map(function (e) { return eventItem(e, reload); }))
    ]);
  }

  function showPayment(query) {
    var box = $("payment");
    $("search").value = query;
    box.setAttribute("aria-busy", "true");
    var reload = function () { showPayment(query); };
    return api("/api/payments/" + encodeURIComponent(query)).then(function (found) {
      fill(box, [h("p", {class: "muted", text: found.payments.length + " payment(s) match “" + query + "”."}),
        found.payments.map(function (p) { return paymentCard(p, reload); })]);
    }, function (error) {
      if (error.status === 404) {
        fill(box, h("p", {class: "banner warn", role: "alert", text: "Nothing found for “" + query + "”: no logged payment or event has that id, reference or transaction hash (the log keeps them for log.retention)."}));
      } else failure(box, error);
    });
  }

  // --- lists --------------------------------------------------------------------------------

  function formQuery(form) {
    var params = new URLSearchParams();
    Array.prototype.forEach.call(form.elements, function (field) {
      if (field.name && field.value.trim()) params.set(field.name, field.value.trim());
    });
    return params;
  }

  function showEvents() {
    var box = $("events");
    var params = formQuery($("events-form"));
    params.set("limit", "100");
    return api("/api/events?" + params.toString()).then(function (found) {
      if (!found.events.length) return fill(box, h("p", {class: "muted", text: "No logged event matches."}));
      fill(box, [h("p", {class: "muted", text: found.count + " event(s), newest first."}),
        h("ul", {class: "list"}, found.events.map(function (e) {
          var states = Object.keys(e.deliveries).map(function (sink) {
            return h("span", {}, [idText(sink) , " ", pill(e.deliveries[sink])]);
          });
          return h("li", {class: "item", "data-event": e.id}, [
            h("div", {class: "head"}, [when(e.accepted_at), h("strong", {text: e.type}),
              h("span", {class: "muted", text: e.source}), e.stale ? pill("stale", "stale") : null]),
            facts([["Payment", paymentLink(e.id, e.payment_id || e.id)],
              ["Reference", e.reference ? idText(e.reference) : null],
              ["Amount", e.amount === null ? null : e.amount + (e.currency ? " " + e.currency : "")],
              ["Sinks", states.length ? h("span", {class: "actions"}, states) : "none"]])
          ]);
        }))]);
    }, function (error) { failure(box, error); });
  }

  function replayLetters(body, what) {
    return api("/api/dead-letters/replay", body).then(function (answer) {
      showDeadLetters();
      refreshOverview();
      return "Replayed " + answer.replayed + " dead letter(s)" + what + ".";
    });
  }

  function letterItem(letter) {
    return h("li", {class: "item letter", "data-letter": letter.id, "data-sink": letter.sink}, [
      h("div", {class: "head"}, [when(letter.failed_at), idText(letter.sink), h("strong", {text: letter.event_type || letter.kind}),
        pill("failed")]),
      facts([["Payment", letter.event_id ? paymentLink(letter.event_id, letter.payment_id || letter.event_id) : letter.payment_id],
        ["Reference", letter.reference ? idText(letter.reference) : null],
        ["Attempts", String(letter.attempts)], ["Last status", letter.last_status ? "HTTP " + letter.last_status : null],
        ["Reason", letter.reason], ["Answer", letter.excerpt ? h("pre", {text: letter.excerpt}) : null]]),
      h("div", {class: "actions"}, actionButton("Replay", "dead letter " + letter.id + " to " + letter.sink, function () {
        return replayLetters({ids: [letter.id]}, " to " + letter.sink);
      }))
    ]);
  }

  function showDeadLetters() {
    var box = $("dead-letters");
    var sink = $("dead-letters-form").elements.sink.value;
    var params = new URLSearchParams({limit: "100"});
    if (sink) params.set("sink", sink);
    return api("/api/dead-letters?" + params.toString()).then(function (found) {
      var all = sink && found.dead_letters.length ? actionButton("Replay all of " + sink, null, function () {
        if (!window.confirm("Replay every dead letter of " + sink + "?")) return null;
        return replayLetters({sink: sink}, " to " + sink);
      }, "danger") : null;
      fill(box, [h("div", {class: "actions"}, [h("p", {class: "muted", text: found.dead_letters.length + " dead letter(s) shown" + (sink ? " for " + sink : "") + ", " + found.total + " in all."}), all]),
        found.dead_letters.length ? h("ul", {class: "list"}, found.dead_letters.map(letterItem))
          : h("p", {class: "muted", text: "No dead letter" + (sink ? " for " + sink : "") + "."}),
        sink ? null : h("p", {class: "muted", text: "Choose a sink to replay all of its dead letters at once."})]);
    }, function (error) { failure(box, error); });
  }

  function rawRequest(detail) {
    var headers = Object.keys(detail.headers).map(function (name) { return [name, detail.headers[name]]; });
    var body = detail.body !== null ? h("pre", {class: "raw-body", text: detail.body})
      : detail.body_base64 ? h("pre", {class: "raw-body", text: "(not UTF-8; base64) " + detail.body_base64})
      : h("p", {class: "muted", text: "The body was not kept."});
    return h("div", {class: "raw"}, [h("h4", {text: detail.method + " " + detail.path}), facts(headers),
      detail.dropped_headers.length ? h("p", {class: "line", text: "Not kept (they carry a secret): " + detail.dropped_headers.join(", ")}) : null,
      body]);
  }

  function replayResult(r) {
    if (r.result === "stored" || r.result === "duplicate") return "Replayed: verified now, " + r.result + " as " + r.inbound_id + ".";
    if (r.result === "still_rejected") return "Still rejected: " + r.status + " " + r.error + " (" + r.reason + ").";
    if (r.result === "cannot_verify") return "Cannot verify it again: " + r.reason;
    return "Not found: it is no longer kept.";
  }

  function rejectionItem(r) {
    var raw = h("div", {class: "raw-box"});
    var show = actionButton("Show raw request", null, function () {
      if (raw.childNodes.length) { raw.textContent = ""; return null; }
      return api("/api/rejections/" + encodeURIComponent(r.id)).then(function (detail) {
        fill(raw, rawRequest(detail));
        return null;
      });
    }, "quiet");
    var outcome = h("p", {class: "line", role: "status"});
    var replay = actionButton("Replay", r.id, function () {
      return api("/api/rejections/replay", {ids: [r.id]}).then(function (answers) {
        outcome.textContent = replayResult(answers[0]);
        return null;
      });
    });
    return h("li", {class: "item rejection", "data-rejection": r.id}, [
      h("div", {class: "head"}, [when(r.received_at), h("strong", {class: "id", text: r.source}),
        h("code", {text: r.status + " " + r.error})]),
      facts([["Reason", r.reason], ["Client", r.client_ip], ["Request", r.method + " " + r.path],
        ["Body", r.body_kept ? r.body_bytes + " bytes kept" : "not kept"], ["Id", idText(r.id)]]),
      h("div", {class: "actions"}, [show, replay]), outcome, raw
    ]);
  }

  function showRejections() {
    var box = $("rejections");
    var params = formQuery($("rejections-form"));
    params.set("limit", "100");
    return api("/api/rejections?" + params.toString()).then(function (found) {
      fill(box, [h("p", {class: "muted", text: "Replay verifies a request again with the current config (after a secret was fixed, say) and stores it if it passes now."}),
        found.length ? h("ul", {class: "list"}, found.map(rejectionItem))
          : h("p", {class: "muted", text: "No rejected request is kept."})]);
    }, function (error) { failure(box, error); });
  }

  // --- routing: #overview, #payment/<query>, #events, #dead-letters, #rejections ------------

  var VIEWS = {
    overview: function () { return refreshOverview(); },
    payment: function (arg) { return showPayment(arg); },
    events: showEvents,
    "dead-letters": showDeadLetters,
    rejections: showRejections
  };

  function route(moveFocus) {
    var hash = location.hash.replace(/^#/, "");
    var slash = hash.indexOf("/");
    var view = slash < 0 ? hash : hash.slice(0, slash);
    var arg = "";
    try { arg = slash < 0 ? "" : decodeURIComponent(hash.slice(slash + 1)); } catch (e) { arg = ""; }
    if (!VIEWS[view] || (view === "payment" && !arg)) view = "overview";
    current = {view: view, arg: arg};
    Object.keys(VIEWS).forEach(function (name) { $("view-" + name).hidden = name !== view; });
    document.querySelectorAll(".tabs a").forEach(function (a) {
      if (a.getAttribute("data-view") === view) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    });
    if (moveFocus) $("h-" + view).focus();
    return VIEWS[view](arg);
  }

  $("search-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var query = $("search").value.trim();
    if (!query) return;
    var target = "#payment/" + encodeURIComponent(query);
    if (location.hash === target) route(true); else location.hash = target;
  });
  [["events-form", showEvents], ["dead-letters-form", showDeadLetters], ["rejections-form", showRejections]].forEach(function (pair) {
    $(pair[0]).addEventListener("submit", function (event) { event.preventDefault(); pair[1](); });
  });
  window.addEventListener("hashchange", function () { notice(""); route(true); });
  if (STATES.length) route(false);
  if (current.view !== "overview") refreshOverview();
})();
