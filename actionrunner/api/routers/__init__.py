"""The admin API's routes, one router per resource: health, actions, runs, queues, dlq."""
