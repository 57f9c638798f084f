#!/usr/bin/env bash
# Start the action server and the Rasa server on 127.0.0.1; Ctrl-C stops both.
#   scripts/run.sh         serve the web chat, the REST channel, the HTTP API and every
#                          channel whose token is set (and the desk when its token is set)
#   scripts/run.sh shell   chat in this terminal instead
set -euo pipefail
cd "$(dirname "$0")/.."
rasa_port="${FIRSTREPLY_RASA_PORT:-5005}"
actions_port="${FIRSTREPLY_ACTIONS_PORT:-5055}"
mkdir -p var/run

.venv/bin/python -m bot ops check >/dev/null

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "FirstReply stopped."
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

# wait_until_up URL PID NAME LOG TRIES: poll URL every 0.5 s, up to TRIES times; give up
# at once if process PID has exited (its log says why).
wait_until_up() {
  local url=$1 pid=$2 name=$3 log=$4 tries=$5
  for _ in $(seq 1 "$tries"); do
    curl -fsS "$url" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { echo "$name did not start; see $log" >&2; exit 1; }
    sleep 0.5
  done
}

# Worker processes: one per core by default, behind one port each (the kernel spreads the
# connections). Conversations stay one at a time and in order across Rasa's workers through
# the lock store in var/locks.db (endpoints.yml: bot.locks.SQLiteLockStore).
cores="$(nproc 2>/dev/null || echo 1)"
rasa_workers="${FIRSTREPLY_RASA_WORKERS:-$cores}"
action_workers="${FIRSTREPLY_ACTION_WORKERS:-$rasa_workers}"
for value in "$rasa_workers" "$action_workers"; do
  [[ "$value" =~ ^[1-9][0-9]*$ ]] || {
    echo "error: FIRSTREPLY_RASA_WORKERS and FIRSTREPLY_ACTION_WORKERS must be whole numbers from 1 (got '$value')" >&2
    exit 1
  }
done
# Every worker must accept the web chat sessions any other issued: one secret for the run.
if [ -z "${FIRSTREPLY_WEBCHAT_SECRET:-}" ]; then
  FIRSTREPLY_WEBCHAT_SECRET="$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))')"
  export FIRSTREPLY_WEBCHAT_SECRET
fi

SANIC_HOST=127.0.0.1 ACTION_SERVER_SANIC_WORKERS="$action_workers" .venv/bin/rasa run actions --port "$actions_port" \
  --actions actions >var/run/actions.log 2>&1 &
pids+=($!)
wait_until_up "http://127.0.0.1:$actions_port/health" "${pids[0]}" "The action server" var/run/actions.log 120

endpoints=var/run/endpoints.yml
sed "s#http://127.0.0.1:5055/webhook#http://127.0.0.1:$actions_port/webhook#" endpoints.yml >"$endpoints"
auth=()
[ -n "${FIRSTREPLY_API_TOKEN:-}" ] && auth=(--auth-token "$FIRSTREPLY_API_TOKEN")

# Channels: credentials.yml lists the ones that need no account; a messaging app is
# added when its token is in the environment (its values stay ${VARIABLES} in the file).
credentials=var/run/credentials.yml
cp credentials.yml "$credentials"
channels=()
inbox_prefix=""
telegram_mode=""
if [ -n "${TELEGRAM_BOT_TOKEN:-}" ]; then
  if [ -n "${TELEGRAM_WEBHOOK_URL:-}" ]; then
    telegram_mode=webhook
    [ -n "${TELEGRAM_WEBHOOK_SECRET:-}" ] || {
      echo "error: TELEGRAM_WEBHOOK_URL is set, so Telegram runs with a webhook and needs TELEGRAM_WEBHOOK_SECRET" >&2
      exit 1
    }
  else
    # No public URL: poll Telegram and hand each update to the local webhook, signed
    # with a secret made up for this run.
    telegram_mode=polling
    export TELEGRAM_WEBHOOK_SECRET="${TELEGRAM_WEBHOOK_SECRET:-$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))')}"
  fi
  printf '%s\n' 'bot.channels.telegram.TelegramInput:' '  token: ${TELEGRAM_BOT_TOKEN}' \
    '  webhook_secret: ${TELEGRAM_WEBHOOK_SECRET}' >>"$credentials"
  channels+=("Telegram ($telegram_mode)")
  inbox_prefix=telegram
fi
if [ -n "${SLACK_BOT_TOKEN:-}" ]; then
  [ -n "${SLACK_SIGNING_SECRET:-}" ] || {
    echo "error: SLACK_BOT_TOKEN is set, so Slack DMs are served and need SLACK_SIGNING_SECRET" >&2
    exit 1
  }
  printf '%s\n' 'bot.channels.slack.SlackDMInput:' '  token: ${SLACK_BOT_TOKEN}' \
    '  signing_secret: ${SLACK_SIGNING_SECRET}' >>"$credentials"
  channels+=("Slack DMs at /webhooks/slack_dm/events")
  inbox_prefix=slack_dm
fi
if [ -n "${WHATSAPP_ACCESS_TOKEN:-}" ]; then
  for variable in WHATSAPP_APP_SECRET WHATSAPP_VERIFY_TOKEN WHATSAPP_PHONE_NUMBER_ID; do
    [ -n "${!variable:-}" ] || {
      echo "error: WHATSAPP_ACCESS_TOKEN is set, so WhatsApp is served and needs $variable" >&2
      exit 1
    }
  done
  printf '%s\n' 'bot.channels.whatsapp.WhatsAppInput:' '  access_token: ${WHATSAPP_ACCESS_TOKEN}' \
    '  app_secret: ${WHATSAPP_APP_SECRET}' '  verify_token: ${WHATSAPP_VERIFY_TOKEN}' \
    '  phone_number_id: ${WHATSAPP_PHONE_NUMBER_ID}' >>"$credentials"
  channels+=("WhatsApp at /webhooks/whatsapp/webhook")
  inbox_prefix=whatsapp
fi

# Messenger and Instagram Direct: one Meta app (META_APP_SECRET signs the webhooks,
# META_VERIFY_TOKEN answers its handshake); docs/channels/messenger.md and instagram.md.
meta_channel() {  # meta_channel NAME TOKEN_VAR ACCOUNT_VAR CLASS ACCOUNT_KEY
  local name
  for name in "$3" META_APP_SECRET META_VERIFY_TOKEN; do
    [ -n "${!name:-}" ] || { echo "error: $2 is set, so $1 is served and needs $name" >&2; exit 1; }
  done
  printf '%s\n' "bot.channels.$4:" "  $5: \${$3}" "  token: \${$2}" '  app_secret: ${META_APP_SECRET}' \
    '  verify_token: ${META_VERIFY_TOKEN}' >>"$credentials"
  inbox_prefix="$(echo "$1" | tr 'A-Z' 'a-z' | cut -d' ' -f1)"
  channels+=("$1 at /webhooks/$inbox_prefix/webhook")
}
if [ -n "${MESSENGER_PAGE_TOKEN:-}" ]; then
  meta_channel Messenger MESSENGER_PAGE_TOKEN MESSENGER_PAGE_ID messenger.MessengerInput page_id
fi
if [ -n "${INSTAGRAM_TOKEN:-}" ]; then
  meta_channel "Instagram Direct" INSTAGRAM_TOKEN INSTAGRAM_ACCOUNT_ID instagram.InstagramInput account_id
fi

if [ -n "${X_CONSUMER_SECRET:-}" ]; then
  for name in X_CONSUMER_KEY X_ACCESS_TOKEN X_ACCESS_TOKEN_SECRET X_BRAND_USER_ID X_BRAND_HANDLE; do
    [ -n "${!name:-}" ] || {
      echo "error: X_CONSUMER_SECRET is set, so X is served and needs $name (docs/channels/x.md)" >&2
      exit 1
    }
  done
  printf '%s\n' 'bot.channels.x.XInput:' '  consumer_key: ${X_CONSUMER_KEY}' '  consumer_secret: ${X_CONSUMER_SECRET}' \
    '  access_token: ${X_ACCESS_TOKEN}' '  access_token_secret: ${X_ACCESS_TOKEN_SECRET}' \
    '  brand_user_id: ${X_BRAND_USER_ID}' '  brand_handle: ${X_BRAND_HANDLE}' >>"$credentials"
  channels+=("X DMs and mentions at /webhooks/x/webhook")
  inbox_prefix=x
fi

# The agent desk follows customers' messages through Rasa's SQL event broker.
desk=""
if [ -n "${SLACK_DESK_BOT_TOKEN:-}" ]; then
  desk=yes
  printf '\n%s\n' 'event_broker:' '  type: SQL' '  dialect: sqlite' "  db: ${FIRSTREPLY_EVENTS_DB:-var/events.db}" >>"$endpoints"
fi

# The front process (bot/front.py) takes the messaging apps' webhooks on the public port:
# stored, new customers greeted, answered at once, however busy Rasa is; Rasa listens on
# its own port behind it and takes the stored messages from the inbox.
front=""
case "$(echo "${FIRSTREPLY_FRONT:-on}" | tr 'A-Z' 'a-z')" in
  on|1|true|yes) if [ -n "$inbox_prefix" ]; then front=yes; fi ;;
  off|0|false|no) ;;
  *) echo "error: FIRSTREPLY_FRONT must be on or off (got '${FIRSTREPLY_FRONT}')" >&2; exit 1 ;;
esac
rasa_own_port="$rasa_port"
rasa_priority=()
if [ -n "$front" ] && [ "${1:-}" != "shell" ]; then
  rasa_own_port="${FIRSTREPLY_RASA_OWN_PORT:-$((rasa_port + 1))}"
  export FIRSTREPLY_PULL_SECONDS="${FIRSTREPLY_PULL_SECONDS:-0.05}"  # bot/front.py, PULL_SECONDS_BEHIND_FRONT
  # The front's few milliseconds per webhook are what a customer waits for: when both want a
  # core, they come before Rasa's reading (bot/front.py, RASA_NICE).
  rasa_priority=(nice -n 10)
fi

if [ "${1:-}" = "shell" ]; then
  .venv/bin/python -m bot.launcher shell --model models/firstreply.tar.gz --endpoints "$endpoints" --port "$rasa_port"
  exit 0
fi

SANIC_WORKERS="$rasa_workers" "${rasa_priority[@]}" .venv/bin/python -m bot.launcher run --model models/firstreply.tar.gz \
  --endpoints "$endpoints" --credentials "$credentials" \
  --interface 127.0.0.1 --port "$rasa_own_port" --enable-api "${auth[@]}" >var/run/rasa.log 2>&1 &
pids+=($!)
if [ -n "$front" ]; then
  .venv/bin/python -m bot.front --credentials "$credentials" --rasa-url "http://127.0.0.1:$rasa_own_port" \
    --interface 127.0.0.1 --port "$rasa_port" >var/run/front.log 2>&1 &
  pids+=($!)
  wait_until_up "http://127.0.0.1:$rasa_port/webhooks/$inbox_prefix/" "${pids[2]}" "The front" var/run/front.log 240
fi
wait_until_up "http://127.0.0.1:$rasa_own_port/" "${pids[1]}" Rasa var/run/rasa.log 240
case "$telegram_mode" in
  webhook) .venv/bin/python -m bot telegram set-webhook "$TELEGRAM_WEBHOOK_URL" ;;
  polling)
    FIRSTREPLY_RASA_URL="http://127.0.0.1:$rasa_port" .venv/bin/python -m bot telegram poll --delete-webhook \
      >var/run/telegram-poll.log 2>&1 &
    pids+=($!)
    ;;
esac
if [ -n "$desk" ]; then
  RASA_URL="http://127.0.0.1:$rasa_own_port" .venv/bin/python -m bot desk >var/run/desk.log 2>&1 &
  pids+=($!)
  channels+=("agent desk in Slack (log: var/run/desk.log; dashboard http://127.0.0.1:${FIRSTREPLY_DESK_PORT:-3000}/dashboard)")
fi
rasa_behind=""
if [ -n "$front" ]; then
  rasa_behind=" on :$rasa_own_port behind the front process, which takes the messaging apps' webhooks (log: var/run/front.log)"
fi
channel_list="REST, web chat"
for channel in "${channels[@]}"; do channel_list="$channel_list, $channel"; done

cat <<MSG
FirstReply is running (channels: $channel_list).
  Rasa server    http://127.0.0.1:$rasa_port   ($rasa_workers worker(s)$rasa_behind; REST channel and HTTP API; log: var/run/rasa.log)
  Action server  http://127.0.0.1:$actions_port   ($action_workers worker(s); log: var/run/actions.log)
  Web chat       http://127.0.0.1:$rasa_port/chat
Talk to it:
  curl -s http://127.0.0.1:$rasa_port/webhooks/rest/webhook \\
    -d '{"sender": "maria", "message": "where is my parcel??", "metadata": {"customer_name": "Maria"}}'
  make shell                         (a chat in the terminal)
  .venv/bin/python -m bot cases list (the cases handed to the team)
Press Ctrl-C to stop.
MSG
wait -n "${pids[@]}"
echo "A server stopped unexpectedly; see var/run/*.log" >&2
exit 1
