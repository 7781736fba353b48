-- 009: app.apply_refunds and app.reserve_bookings (sql/006) without a loop.
-- They ran two or three statements per event; now each runs a fixed handful
-- per batch: lock the rows the batch touches in the batch's order, find how
-- many events from the first apply (running sums per payment or flight, so
-- that two events of one batch on the same row are checked together), write
-- them in one statement per table, and answer one row per event applied.
-- The contract is sql/006's: stop before the first event that does not simply
-- apply, having changed nothing for it; the handler's own path answers that one.
-- Measured (2 cores, 10 lanes, batches of 50): apply_refunds' statement time
-- in a 100,000-job mix 10.4 s -> 7.6 s; refunds +3%, bookings +5% jobs/s (a
-- batch now waits mostly on its round trips and its commit, not on these).

CREATE OR REPLACE FUNCTION app.apply_refunds(
    refund_ids text[], payment_ids text[], amounts bigint[], currencies text[], job_ids bigint[])
RETURNS TABLE (refunded_total_cents bigint)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off
AS $$
DECLARE
    totals bigint[];
BEGIN
    -- In the batch's order: the order every worker locks payments in.
    PERFORM FROM unnest(payment_ids) WITH ORDINALITY AS e(payment_id, ord)
    JOIN app.payments AS p ON p.id = e.payment_id
    ORDER BY e.ord
    FOR UPDATE OF p;

    -- The payment's refunded total after each event, for the events before the
    -- first that does not apply: an unknown payment, another currency, a
    -- refund that does not fit, or a refund id that exists (or came earlier).
    WITH checked AS (
        SELECT e.ord,
               (p.refunded_cents + sum(e.amount) OVER (PARTITION BY e.payment_id ORDER BY e.ord))::bigint AS total,
               coalesce(
                   p.currency = e.currency AND e.amount > 0
                   AND p.refunded_cents + sum(e.amount) OVER (PARTITION BY e.payment_id ORDER BY e.ord)
                       <= p.amount_cents
                   AND row_number() OVER (PARTITION BY e.refund_id ORDER BY e.ord) = 1
                   AND NOT EXISTS (SELECT FROM app.refunds AS r WHERE r.refund_id = e.refund_id),
                   false) AS applies
        FROM unnest(refund_ids, payment_ids, amounts, currencies)
             WITH ORDINALITY AS e(refund_id, payment_id, amount, currency, ord)
        LEFT JOIN app.payments AS p ON p.id = e.payment_id
    )
    SELECT coalesce(array_agg(c.total ORDER BY c.ord), '{}') INTO totals
    FROM checked AS c
    WHERE c.ord < coalesce((SELECT min(f.ord) FROM checked AS f WHERE NOT f.applies), 2147483647);

    INSERT INTO app.refunds (refund_id, payment_id, amount_cents, currency, job_id)
    SELECT refund_ids[n], payment_ids[n], amounts[n], currencies[n], job_ids[n]
    FROM generate_series(1, cardinality(totals)) AS n;

    -- The conditional write, checked above on the locked rows.
    UPDATE app.payments AS p
    SET refunded_cents = p.refunded_cents + s.amount,
        status = CASE WHEN p.refunded_cents + s.amount = p.amount_cents THEN 'refunded' ELSE 'partially_refunded' END,
        updated_at = now()
    FROM (SELECT payment_ids[n] AS id, sum(amounts[n])::bigint AS amount
          FROM generate_series(1, cardinality(totals)) AS n GROUP BY 1) AS s
    WHERE p.id = s.id;

    RETURN QUERY SELECT unnest(totals);
END
$$;

CREATE OR REPLACE FUNCTION app.reserve_bookings(
    request_ids text[], flight_ids text[], seats integer[], amounts bigint[], currencies text[])
RETURNS TABLE (seats_left integer)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off
AS $$
DECLARE
    lefts integer[];
BEGIN
    -- In the batch's order: the order every worker locks flights in. They stay
    -- locked until commit, so a flight reserved here is not cancelled before
    -- its bookings are confirmed.
    PERFORM FROM unnest(flight_ids) WITH ORDINALITY AS e(flight_id, ord)
    JOIN app.flights AS f ON f.id = e.flight_id
    ORDER BY e.ord
    FOR UPDATE OF f;

    -- The flight's seats left after each event, for the events before the
    -- first that does not apply: an unknown or cancelled flight, too few
    -- seats (never oversold), or a request that exists (or came earlier).
    WITH checked AS (
        SELECT e.ord,
               (f.seats_available - sum(e.seats) OVER (PARTITION BY e.flight_id ORDER BY e.ord))::integer AS seats_left,
               coalesce(
                   f.status = 'scheduled' AND e.seats > 0
                   AND f.seats_available - sum(e.seats) OVER (PARTITION BY e.flight_id ORDER BY e.ord) >= 0
                   AND row_number() OVER (PARTITION BY e.request_id ORDER BY e.ord) = 1
                   AND NOT EXISTS (SELECT FROM app.bookings AS b WHERE b.request_id = e.request_id),
                   false) AS applies
        FROM unnest(request_ids, flight_ids, seats) WITH ORDINALITY AS e(request_id, flight_id, seats, ord)
        LEFT JOIN app.flights AS f ON f.id = e.flight_id
    )
    SELECT coalesce(array_agg(c.seats_left ORDER BY c.ord), '{}') INTO lefts
    FROM checked AS c
    WHERE c.ord < coalesce((SELECT min(x.ord) FROM checked AS x WHERE NOT x.applies), 2147483647);

    -- The conditional write, checked above on the locked rows.
    UPDATE app.flights AS f
    SET seats_available = f.seats_available - s.seats
    FROM (SELECT flight_ids[n] AS id, sum(seats[n])::integer AS seats
          FROM generate_series(1, cardinality(lefts)) AS n GROUP BY 1) AS s
    WHERE f.id = s.id;

    INSERT INTO app.bookings (request_id, flight_id, seats, amount_cents, currency, status)
    SELECT request_ids[n], flight_ids[n], seats[n], amounts[n], currencies[n], 'awaiting_payment'
    FROM generate_series(1, cardinality(lefts)) AS n;

    RETURN QUERY SELECT unnest(lefts);
END
$$;
