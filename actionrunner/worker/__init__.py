"""The worker side: how received SQS messages become running actions."""
