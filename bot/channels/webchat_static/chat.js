// FirstReply web chat. Plain JavaScript, no dependencies.
//
// Every message gets a client id before it is sent and stays in the outbox (kept in
// localStorage) until the server has answered it; a failed send is retried with the same
// id, and the server answers a repeated id without passing it to the assistant again.
// All message text goes into the page with textContent, never as HTML.
(function () {
  "use strict";

  var STORAGE_KEY = "firstreply.webchat.v1";
  var BACKOFF_MS = [1000, 2000, 4000, 8000, 15000];
  var POLL_MS = 5000;
  var RETRY_STATUSES = [0, 408, 409, 425, 429, 500, 502, 503, 504];

  var ui = {};
  var state = {
    session: null, // {sender, token}
    name: "",
    outbox: [], // [{client_id, text, payload}]
    lastId: 0,
    seen: {}, // server ids already on the page
    sending: false,
    wake: null,
  };

  // --- storage -----------------------------------------------------------------------

  function load() {
    try {
      var saved = JSON.parse(window.localStorage.getItem(STORAGE_KEY) || "{}");
      if (saved.session && saved.session.sender && saved.session.token) state.session = saved.session;
      if (typeof saved.name === "string") state.name = saved.name;
      if (Array.isArray(saved.outbox)) state.outbox = saved.outbox;
    } catch (error) {
      // No storage (private mode) or unreadable: start afresh.
    }
  }

  function save() {
    try {
      window.localStorage.setItem(
        STORAGE_KEY,
        JSON.stringify({ session: state.session, name: state.name, outbox: state.outbox })
      );
    } catch (error) {
      // Storage full or blocked: the conversation still works until the page is closed.
    }
  }

  function newClientId() {
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  // --- talking to the server -----------------------------------------------------------

  // Resolves to {status, data}; status 0 when the server could not be reached.
  function call(path, options) {
    var init = { method: options.method || "GET", cache: "no-store", headers: {} };
    if (options.body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    if (options.token) init.headers.Authorization = "Bearer " + options.token;
    return window.fetch(path, init).then(
      function (response) {
        return response.json().then(
          function (data) { return { status: response.status, data: data }; },
          function () { return { status: response.status, data: {} }; }
        );
      },
      function () { return { status: 0, data: {} }; }
    );
  }

  function startSession() {
    return call("session", { method: "POST" }).then(function (result) {
      if (result.status !== 200) throw new Error("no session");
      state.session = { sender: result.data.sender, token: result.data.token };
      state.lastId = 0;
      save();
    });
  }

  function fetchHistory() {
    if (!state.session) return Promise.resolve(null);
    var query = "history?sender=" + encodeURIComponent(state.session.sender) + "&after=" + state.lastId;
    return call(query, { token: state.session.token });
  }

  // --- rendering -----------------------------------------------------------------------

  function scrollToEnd() {
    ui.body.scrollTop = ui.body.scrollHeight;
  }

  function firstPending() {
    return ui.messages.querySelector("li.pending");
  }

  function bubble(message) {
    var item = document.createElement("li");
    item.className = "message " + (message.from === "customer" ? "from-customer" : "from-bot");
    var text = document.createElement("p");
    text.className = "text";
    text.textContent = message.text;
    item.appendChild(text);
    var who = document.createElement("span");
    who.className = "visually-hidden who";
    who.textContent = message.from === "customer" ? "You said: " : "Assistant: ";
    item.insertBefore(who, text);
    return item;
  }

  function clearButtons() {
    var groups = ui.messages.querySelectorAll(".quick-replies");
    Array.prototype.forEach.call(groups, function (group) { group.remove(); });
  }

  function renderButtons(item, buttons) {
    var group = document.createElement("div");
    group.className = "quick-replies";
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", "Suggested answers");
    buttons.forEach(function (button) {
      if (button.url) {
        var link = document.createElement("a");
        link.className = "quick-reply";
        link.href = button.url;
        link.target = "_blank";
        link.rel = "noopener noreferrer";
        link.textContent = button.title;
        group.appendChild(link);
        return;
      }
      var press = document.createElement("button");
      press.type = "button";
      press.className = "quick-reply";
      press.textContent = button.title;
      press.addEventListener("click", function () {
        send(button.title, button.payload);
      });
      group.appendChild(press);
    });
    item.appendChild(group);
  }

  // Show a message from the server once, in order, before any message still being sent.
  function showServerMessage(message) {
    if (state.seen[message.id]) return;
    state.seen[message.id] = true;
    state.lastId = Math.max(state.lastId, message.id);
    var item = null;
    if (message.from === "customer") {
      clearButtons();
      item = ui.messages.querySelector('li[data-client-id="' + message.client_id + '"]');
      if (item) {
        item.classList.remove("pending", "failed");
        setNote(item, "");
        item.querySelector(".text").textContent = message.text;
        item.dataset.id = String(message.id);
        return;
      }
    }
    item = bubble(message);
    item.dataset.id = String(message.id);
    if (message.client_id) item.dataset.clientId = message.client_id;
    if (message.buttons && message.buttons.length) renderButtons(item, message.buttons);
    ui.messages.insertBefore(item, firstPending());
    markStarted();
    scrollToEnd();
  }

  function showPending(entry) {
    if (ui.messages.querySelector('li[data-client-id="' + entry.client_id + '"]')) return;
    clearButtons();
    var item = bubble({ from: "customer", text: entry.text });
    item.classList.add("pending");
    item.dataset.clientId = entry.client_id;
    ui.messages.appendChild(item);
    markStarted();
    scrollToEnd();
  }

  function setNote(item, note) {
    var existing = item.querySelector(".note");
    if (!note) {
      if (existing) existing.remove();
      return;
    }
    if (!existing) {
      existing = document.createElement("span");
      existing.className = "note";
      item.appendChild(existing);
    }
    existing.textContent = note;
  }

  function markStarted() {
    ui.intro.classList.add("started");
  }

  function setTyping(on) {
    ui.typing.hidden = !on;
    if (on) scrollToEnd();
  }

  function setStatus(text, reconnecting) {
    ui.status.textContent = text;
    ui.status.hidden = !text;
    ui.chat.classList.toggle("reconnecting", Boolean(reconnecting));
  }

  // --- sending -------------------------------------------------------------------------

  function send(text, payload) {
    text = text.trim();
    if (!text) return;
    var entry = { client_id: newClientId(), text: text };
    if (payload) entry.payload = payload;
    state.outbox.push(entry);
    save();
    showPending(entry);
    pump();
  }

  function sleep(ms) {
    return new Promise(function (resolve) {
      var timer = window.setTimeout(done, ms);
      function done() {
        window.clearTimeout(timer);
        state.wake = null;
        resolve();
      }
      state.wake = done; // coming back online cuts the wait short
    });
  }

  function deliver(entry) {
    var body = {
      sender: state.session.sender,
      token: state.session.token,
      client_id: entry.client_id,
      message: entry.text,
      // A new visitor's greeting comes back as soon as it is ready ("more": the rest follows).
      partial: true,
    };
    if (entry.payload) body.payload = entry.payload;
    if (state.name) body.name = state.name;
    return call("message", { method: "POST", body: body });
  }

  // Send the outbox in order, one message at a time, until it is empty.
  function pump() {
    if (state.sending) return;
    state.sending = true;
    var attempt = 0;

    function next() {
      if (!state.outbox.length) {
        state.sending = false;
        setTyping(false);
        return Promise.resolve();
      }
      var entry = state.outbox[0];
      var ready = state.session ? Promise.resolve() : startSession();
      return ready
        .then(function () {
          setTyping(attempt === 0);
          return deliver(entry);
        }, function () { return { status: 0, data: {} }; })
        .then(function (result) {
          if (result.status === 200 && result.data.more) {
            // The greeting, shown at once; the same message again brings the whole answer.
            showServerMessage(result.data.customer);
            result.data.replies.forEach(showServerMessage);
            setTyping(true);
            return next();
          }
          if (result.status === 200) {
            attempt = 0;
            setStatus("");
            state.outbox.shift();
            save();
            showServerMessage(result.data.customer);
            result.data.replies.forEach(showServerMessage);
            return next();
          }
          if (result.status === 401) {
            // The server no longer knows this conversation (restarted without a fixed secret).
            state.session = null;
            save();
            setStatus("Your earlier conversation has expired; starting a new one.");
            return next();
          }
          if (RETRY_STATUSES.indexOf(result.status) !== -1) {
            setTyping(false);
            setStatus("Connection lost, reconnecting…", true);
            var wait = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
            attempt += 1;
            return sleep(wait).then(next);
          }
          // The server refused this message for good (too long, malformed): say so, go on.
          attempt = 0;
          setStatus("");
          state.outbox.shift();
          save();
          var item = ui.messages.querySelector('li[data-client-id="' + entry.client_id + '"]');
          if (item) {
            item.classList.remove("pending");
            item.classList.add("failed");
            setNote(item, "Not sent: " + (result.data.error || "the server refused it"));
          }
          return next();
        });
    }

    next();
  }

  // --- polling for messages sent later (an agent's reply) ----------------------------

  function poll() {
    if (state.sending || document.visibilityState !== "visible" || !state.session) return;
    fetchHistory().then(function (result) {
      if (result && result.status === 200) result.data.messages.forEach(showServerMessage);
    });
  }

  // --- start ---------------------------------------------------------------------------

  function restore() {
    return fetchHistory().then(function (result) {
      if (!result) return;
      if (result.status === 401) {
        state.session = null;
        save();
        return;
      }
      if (result.status === 200) result.data.messages.forEach(showServerMessage);
    });
  }

  function autosize() {
    ui.input.style.height = "auto";
    ui.input.style.height = Math.min(ui.input.scrollHeight, 140) + "px";
  }

  function init() {
    ui.chat = document.getElementById("chat");
    ui.body = document.getElementById("chat-body");
    ui.messages = document.getElementById("messages");
    ui.intro = document.getElementById("intro");
    ui.typing = document.getElementById("typing");
    ui.status = document.getElementById("status");
    ui.form = document.getElementById("composer");
    ui.input = document.getElementById("message-input");
    ui.name = document.getElementById("customer-name");

    load();
    ui.name.value = state.name;
    ui.name.addEventListener("input", function () {
      state.name = ui.name.value.trim();
      save();
    });
    ui.form.addEventListener("submit", function (event) {
      event.preventDefault();
      var text = ui.input.value;
      if (!text.trim()) return;
      ui.input.value = "";
      autosize();
      send(text);
      ui.input.focus();
    });
    ui.input.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        ui.form.requestSubmit();
      }
    });
    ui.input.addEventListener("input", autosize);
    window.addEventListener("online", function () {
      if (state.wake) state.wake();
    });

    restore().then(function () {
      state.outbox.forEach(showPending);
      pump();
      window.setInterval(poll, POLL_MS);
      document.body.dataset.ready = "true";
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
