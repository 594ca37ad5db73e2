//! The attempt loop: the phase between the upstream request and the response head.
//!
//! Each attempt chooses an endpoint, waits for an in-flight slot, takes a pooled connection or
//! opens one, sends the request and reads the response head, and checks that the response's
//! framing can be relayed. A failed attempt is recorded, reported to the endpoint's health, and
//! handed to the retry rules ([`Retries::after`]), which decide between another attempt, a
//! pause while every endpoint restarts, and giving up.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cause::{Cause, ClientFault, Failure, Phase};
use http_body::Frame;
use upstream::{Endpoint, Outcome, Slot, Upstream};

use crate::body::{first_frame, RequestLog};
use crate::forward::{Outgoing, Routed};
use crate::framing::{response_framing, Framing};
use crate::log::AttemptRecord;
use crate::Gateway;

/// The attempt that got an answer: the upstream's response head, its body still to stream, and
/// the connection and slot it holds.
pub(crate) struct Answered {
    pub parts: http::response::Parts,
    pub incoming: net::UpstreamBody,
    pub framing: Framing,
    /// What a look at the body before the head went out found.
    pub early: Option<Option<Frame<Bytes>>>,
    pub conn: net::Conn,
    pub exchange: net::Exchange,
    pub endpoint: Arc<Endpoint>,
    pub slot: Slot,
    pub attempt_started: Instant,
}

/// How one attempt ended, when it did not end the request outright.
// The large variant is the common one; boxing it would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Tried {
    Answered(Answered),
    /// The failure, and how long the connection had been idle when it was a pooled one.
    Failed(Failure, Option<Duration>),
}

/// What the retry rules made of a failed attempt.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Another attempt, at once.
    Again,
    /// Every endpoint seems to be restarting: another attempt after this pause.
    Pause(Duration),
}

/// The retry rules' state over one request's attempts.
struct Retries {
    /// Endpoints that failed this request (cleared after a restart pause).
    tried: Vec<usize>,
    retries_left: u32,
    restart_until: Instant,
    backoff: Duration,
}

/// What one failed attempt tells the retry rules.
struct Failed<'a> {
    failure: Failure,
    idle_for: Option<Duration>,
    endpoint: &'a Endpoint,
    /// The request body can be sent again.
    replayable: bool,
}

impl Retries {
    fn new(routed: &Routed<'_>) -> Retries {
        Retries {
            tried: Vec::new(),
            retries_left: routed.retry.attempts.saturating_sub(1),
            restart_until: routed.started + routed.upstream.config.restart_wait,
            backoff: Duration::from_millis(25),
        }
    }

    /// The retry rules: facts first, then the request's properties, then limits. Gives the
    /// failure back when the request is to fail with it.
    fn after(
        &mut self,
        routed: &Routed<'_>,
        failed: Failed<'_>,
        log: &RequestLog,
        gateway: &Gateway,
    ) -> Result<Next, Failure> {
        let Failed {
            failure: f,
            idle_for,
            endpoint,
            replayable,
        } = failed;
        let upstream: &Upstream = routed.upstream;
        if f.cause.side() != cause::Side::Upstream {
            return Err(f);
        }
        upstream.report(endpoint, Outcome::Failed(&f));
        let race =
            f.reused && f.response_bytes == 0 && matches!(f.cause, Cause::Closed | Cause::Reset);
        if race {
            if let Some(idle) = idle_for {
                upstream.lost_race(endpoint, idle);
            }
        }
        let unsent = f.phase.before_send() || f.unprocessed;
        let timed_out = f.cause == Cause::Timeout;
        let allowed = replayable
            && (unsent
                || (routed.idempotent
                    && (race
                        || (routed.retry.on.contains(&f.cause)
                            && (!timed_out || routed.repeatable)))));
        if !allowed || net::clock::now() >= routed.deadline {
            return Err(f);
        }
        self.tried.push(endpoint.index);
        // The signs of an endpoint going down or coming up: nothing listens, or a new
        // connection dies before a single response byte (a process being killed).
        let going_away = (f.phase == Phase::Connect
            && matches!(f.cause, Cause::Refused | Cause::Unreachable | Cause::Reset))
            || (!f.reused
                && f.response_bytes == 0
                && matches!(f.cause, Cause::Reset | Cause::Closed));
        if going_away && self.tried.len() >= upstream.endpoints.len() {
            // A restart gap: every endpoint is down. Idempotent requests wait a little for one
            // to come back instead of failing at once.
            if !routed.idempotent
                || Instant::now() + self.backoff >= self.restart_until.min(routed.deadline)
            {
                return Err(f);
            }
            // A refused connect costs the upstream nothing; a request it received and dropped
            // does, so those waits draw on the retry budget.
            if f.request_bytes > 0 && !upstream.budget.try_retry() {
                return Err(budget_spent(f));
            }
            let pause = self.backoff;
            self.backoff = (self.backoff * 2).min(Duration::from_millis(250));
            self.tried.clear();
            // Another attempt follows, after the pause: counted as a retry too.
            gateway.logger.metrics().retry(&f);
            return Ok(Next::Pause(pause));
        }
        // Every endpoint already failed this request: only a lost keep-alive race or a request
        // the upstream refused unprocessed is worth another try on them.
        if self.retries_left == 0
            || (self.tried.len() >= upstream.endpoints.len() && !race && !f.unprocessed)
        {
            return Err(f);
        }
        if !upstream.budget.try_retry() {
            return Err(budget_spent(f));
        }
        gateway
            .logger
            .attempt_retried(&log.record.request_id, &f, log.attempts, race);
        self.retries_left -= 1;
        Ok(Next::Again)
    }
}

fn budget_spent(mut f: Failure) -> Failure {
    f.detail = Some(format!(
        "{}; not retried: the retry budget is spent",
        f.detail.unwrap_or_default()
    ));
    f
}

impl Gateway {
    /// Attempts until one gets a response head whose body can be relayed, or the retry rules
    /// give up.
    pub(crate) async fn attempts(
        &self,
        routed: &Routed<'_>,
        outgoing: &mut Outgoing,
        log: &mut RequestLog,
    ) -> Result<Answered, Failure> {
        let upstream = routed.upstream;
        let mut retries = Retries::new(routed);
        loop {
            let attempt_started = net::clock::now();
            // Choosing an endpoint and waiting for a slot are not attempts: nothing reached the
            // upstream if they fail, and the attempt count says so.
            let choice = upstream
                .select(&retries.tried, routed.key)
                .map_err(|mut f| {
                    f.attempt = log.attempts;
                    f
                })?;
            let endpoint = choice.endpoint;
            log.record.endpoint = Some(endpoint.name.clone());
            let mut attempt = AttemptRecord::at(endpoint.name.clone());
            let slot = upstream
                .acquire(&endpoint, routed.deadline)
                .await
                .map_err(|mut f| {
                    f.attempt = log.attempts;
                    f
                })?;
            log.attempts += 1;
            let tried = self
                .attempt(
                    routed,
                    outgoing,
                    &endpoint,
                    slot,
                    attempt_started,
                    &mut attempt,
                    log,
                )
                .await?;
            match tried {
                Tried::Answered(answered) => {
                    attempt.first_byte = Some(net::clock::since(attempt_started));
                    attempt.status = Some(answered.parts.status.as_u16());
                    log.record.attempts.push(attempt);
                    upstream.report(
                        &answered.endpoint,
                        Outcome::Answered(answered.parts.status.as_u16()),
                    );
                    return Ok(answered);
                }
                Tried::Failed(mut f, idle_for) => {
                    f.attempt = log.attempts;
                    f.upstream.get_or_insert_with(|| upstream.name.to_string());
                    f.endpoint.get_or_insert_with(|| endpoint.name.to_string());
                    if outgoing
                        .too_large
                        .as_ref()
                        .is_some_and(|t| t.load(Ordering::Acquire))
                    {
                        f = Failure::client(
                            ClientFault::BodyTooLarge,
                            format!(
                                "request body exceeds the limit of {} bytes",
                                self.config.limits.max_request_body_bytes
                            ),
                        );
                    }
                    attempt.cause = Some(f.cause);
                    attempt.phase = Some(f.phase);
                    attempt.total = Some(net::clock::since(attempt_started));
                    log.record.attempts.push(attempt);
                    let failed = Failed {
                        failure: f,
                        idle_for,
                        endpoint: &endpoint,
                        replayable: outgoing.body.available(),
                    };
                    match retries.after(routed, failed, log, self)? {
                        Next::Again => {}
                        Next::Pause(pause) => tokio::time::sleep(pause).await,
                    }
                }
            }
        }
    }

    /// One attempt on `endpoint`: connection, send, response head, framing. An error ends the
    /// request at once, without the retry rules.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        routed: &Routed<'_>,
        outgoing: &mut Outgoing,
        endpoint: &Arc<Endpoint>,
        slot: Slot,
        attempt_started: Instant,
        attempt: &mut AttemptRecord,
        log: &mut RequestLog,
    ) -> Result<Tried, Failure> {
        let checkout = match routed
            .upstream
            .checkout(endpoint, slot, !routed.idempotent)
            .await
        {
            Ok(c) => c,
            Err(f) => return Ok(Tried::Failed(f, None)),
        };
        // One clock read for what the checkout took, the connection's age and the deadline.
        let now = net::clock::now();
        attempt.reused = checkout.conn.uses > 0;
        attempt.connect = Some(now.saturating_duration_since(attempt_started));
        attempt.idle = checkout.idle_for;
        attempt.conn_uses = checkout.conn.uses;
        attempt.conn_age = Some(now.saturating_duration_since(checkout.conn.created));
        let idle_for = checkout.idle_for;
        // The head is lent to the attempt, never copied for HTTP/1.1: a retry sends it again.
        let (Some(head), Some(req_body)) =
            (outgoing.parts.as_ref(), outgoing.body.take_for_attempt())
        else {
            // The retry rules never allow this; say so loudly if they ever do.
            return Err(Failure::new(Cause::Internal, Phase::SendRequest)
                .with_detail("a streamed request body cannot be sent twice"));
        };
        if log.bytes_in.is_none() {
            log.bytes_in = req_body.progress().cloned();
        }
        let mut deadlines = self.deadlines[routed.upstream_index];
        if let Some(per_try) = routed.retry.per_try_timeout {
            deadlines.response = deadlines.response.min(per_try);
        }
        // No attempt runs past the route's deadline.
        deadlines.response = deadlines
            .response
            .min(routed.deadline.saturating_duration_since(now));
        let sent = checkout
            .conn
            .send_with(
                head,
                outgoing.added.lines(&outgoing.request_id).as_slice(),
                req_body,
                &deadlines,
            )
            .await;
        let (resp, conn, exchange) = match sent {
            Ok(sent) => sent,
            Err((f, _)) => return Ok(Tried::Failed(f, idle_for)),
        };
        // The response head arrived; is its body framed so that it can be relayed, and is its
        // start readable?
        let (mut parts, mut incoming) = resp.into_parts();
        let checked = match response_framing(&mut parts.headers, &exchange.head) {
            Ok(framing) => match first_frame(&mut incoming).await {
                Ok(early) => Ok((framing, early)),
                Err(e) => Err(net::body_failure(e, &exchange)),
            },
            Err(mut f) => {
                exchange.fill(&mut f);
                Err(f)
            }
        };
        match checked {
            Ok((framing, early)) => Ok(Tried::Answered(Answered {
                parts,
                incoming,
                framing,
                early,
                conn,
                exchange,
                endpoint: checkout.endpoint,
                slot: checkout.slot,
                attempt_started,
            })),
            Err(mut f) => {
                f.endpoint = Some(checkout.endpoint.name.to_string());
                Ok(Tried::Failed(f, None))
            }
        }
    }
}
