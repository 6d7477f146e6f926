#!/bin/sh
# ActionRunner's container entry point: one process per container, chosen by the first word.
#
#   worker [celery worker options]   celery -A actionrunner worker -c $WORKER_CONCURRENCY (4)
#   beat   [celery beat options]     celery -A actionrunner beat (schedule state in /tmp)
#   api    [actionrunner api options]  the admin API on 0.0.0.0:$PORT (8000)
#   flower [flower options]          Flower on :$PORT (5555) under /$FLOWER_URL_PREFIX, basic auth
#                                    from FLOWER_USER (admin) / FLOWER_PASSWORD; refuses to start
#                                    without a password
#   healthcheck                      python -m actionrunner.healthcheck
#   anything else                    run as given (e.g. `actionrunner provision --check`)
#
# The process replaces this shell (exec), so it is PID 1 and gets ECS's SIGTERM itself.
set -eu

role="${1:-worker}"
if [ "$#" -gt 0 ]; then
  shift
fi
level="${ACTIONRUNNER_LOG_LEVEL:-INFO}"

case "$role" in
  worker)
    exec celery -A actionrunner worker --concurrency "${WORKER_CONCURRENCY:-4}" \
      --loglevel "$level" --without-mingle --without-gossip "$@"
    ;;
  beat)
    exec celery -A actionrunner beat --loglevel "$level" \
      --schedule /tmp/celerybeat-schedule "$@"
    ;;
  api)
    exec actionrunner api --host 0.0.0.0 --port "${PORT:-8000}" "$@"
    ;;
  flower)
    if [ -z "${FLOWER_PASSWORD:-}" ]; then
      echo "entrypoint: refusing to start Flower without FLOWER_PASSWORD (basic auth)" >&2
      exit 64
    fi
    FLOWER_BASIC_AUTH="${FLOWER_USER:-admin}:${FLOWER_PASSWORD}"
    export FLOWER_BASIC_AUTH
    # --enable_events=False: the workers send events as ACTIONRUNNER_TASK_EVENTS says; Flower's
    # broadcast every 5 s to switch them on would only cost requests
    exec celery -A actionrunner flower --port="${PORT:-5555}" \
      --url_prefix="${FLOWER_URL_PREFIX:-flower}" --enable_events=False "$@"
    ;;
  healthcheck)
    exec python -m actionrunner.healthcheck "$@"
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
