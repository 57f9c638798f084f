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

SANIC_HOST=127.0.0.1 .venv/bin/rasa run actions --port "$actions_port" --actions actions \
  >var/run/actions.log 2>&1 &
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
fi
if [ -n "${SLACK_BOT_TOKEN:-}" ]; then
  [ -n "${SLACK_SIGNING_SECRET:-}" ] || {
    echo "error: SLACK_BOT_TOKEN is set, so Slack DMs are served and need SLACK_SIGNING_SECRET" >&2
    exit 1
  }
  printf '%s\n' 'bot.channels.slack.SlackDMInput:' '  token: ${SLACK_BOT_TOKEN}' \
    '  signing_secret: ${SLACK_SIGNING_SECRET}' >>"$credentials"
  channels+=("Slack DMs at /webhooks/slack_dm/events")
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
fi

# The agent desk follows customers' messages through Rasa's SQL event broker.
desk=""
if [ -n "${SLACK_DESK_BOT_TOKEN:-}" ]; then
  desk=yes
  printf '\n%s\n' 'event_broker:' '  type: SQL' '  dialect: sqlite' "  db: ${FIRSTREPLY_EVENTS_DB:-var/events.db}" >>"$endpoints"
fi

if [ "${1:-}" = "shell" ]; then
  .venv/bin/python -m bot.launcher shell --model models/firstreply.tar.gz --endpoints "$endpoints" --port "$rasa_port"
  exit 0
fi

.venv/bin/python -m bot.launcher run --model models/firstreply.tar.gz --endpoints "$endpoints" --credentials "$credentials" \
  --interface 127.0.0.1 --port "$rasa_port" --enable-api "${auth[@]}" >var/run/rasa.log 2>&1 &
pids+=($!)
wait_until_up "http://127.0.0.1:$rasa_port/" "${pids[1]}" Rasa var/run/rasa.log 240
case "$telegram_mode" in
  webhook) .venv/bin/python -m bot telegram set-webhook "$TELEGRAM_WEBHOOK_URL" ;;
  polling)
    FIRSTREPLY_RASA_URL="http://127.0.0.1:$rasa_port" .venv/bin/python -m bot telegram poll --delete-webhook \
      >var/run/telegram-poll.log 2>&1 &
    pids+=($!)
    ;;
esac
if [ -n "$desk" ]; then
  RASA_URL="http://127.0.0.1:$rasa_port" .venv/bin/python -m bot desk >var/run/desk.log 2>&1 &
  pids+=($!)
  channels+=("agent desk in Slack (log: var/run/desk.log; dashboard http://127.0.0.1:${FIRSTREPLY_DESK_PORT:-3000}/dashboard)")
fi
channel_list="REST, web chat"
for channel in "${channels[@]}"; do channel_list="$channel_list, $channel"; done

cat <<MSG
FirstReply is running (channels: $channel_list).
  Rasa server    http://127.0.0.1:$rasa_port   (REST channel and HTTP API; log: var/run/rasa.log)
  Action server  http://127.0.0.1:$actions_port   (log: var/run/actions.log)
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
