-- Slack HTTP requests already taken (replay protection shared by every replica): a signed request is
-- identified by its X-Slack-Request-Timestamp and X-Slack-Signature. The first replica to insert the pair
-- processes the request; any later copy inside Slack's five-minute window is answered without effect.
-- Rows older than the window are deleted by serve's housekeeping (expired rows can never match: the
-- signature check refuses their timestamp).

CREATE TABLE slack_requests (
    sent_at    bigint      NOT NULL,   -- X-Slack-Request-Timestamp (Unix seconds)
    signature  text        NOT NULL,   -- X-Slack-Signature (v0=...)
    seen_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sent_at, signature)
);
CREATE INDEX slack_requests_expiry ON slack_requests (sent_at);
