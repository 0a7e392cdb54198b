#!/bin/sh
# Start rabbitmq-server as a non-root user: everything it writes lives under $HOME (Debian's wrapper in /usr/sbin
# insists on root or the rabbitmq user, so the server script is run directly).
set -eu
export HOME=/tmp/rabbitmq
mkdir -p "$HOME"
# Erlang distribution (rabbitmqctl, epmd) needs a cookie readable only by its owner.
[ -f "$HOME/.erlang.cookie" ] || { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$HOME/.erlang.cookie"; }
chmod 400 "$HOME/.erlang.cookie"
echo '[].' > "$HOME/enabled_plugins"
export RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_MNESIA_BASE="$HOME/mnesia" RABBITMQ_LOG_BASE="$HOME/log" \
  RABBITMQ_LOGS=- RABBITMQ_CONFIG_FILE=/opt/kfn-rabbitmq/rabbitmq.conf RABBITMQ_ENABLED_PLUGINS_FILE="$HOME/enabled_plugins" \
  RABBITMQ_CONF_ENV_FILE=/dev/null RABBITMQ_ADVANCED_CONFIG_FILE="$HOME/advanced.config"
exec /usr/lib/rabbitmq/bin/rabbitmq-server
