"""The Slack front end: a Bolt app (built by `create_app`, never at import time) over the same RunService."""
