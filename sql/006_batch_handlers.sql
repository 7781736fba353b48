-- 006: the refund and booking handlers' set-based statements. A batch's
-- refunds (or bookings) are applied by one call instead of a statement (or
-- four) per event, each a round trip.
--
-- Each function takes the batch's events in lock order, applies them while
-- each goes the usual way, and stops before the first that does not (an
-- existing refund or booking, too little left to refund, too few seats, an
-- unknown payment or flight), having changed nothing for it (a booking that
-- exists gives its seats back at once): that event then runs through the
-- handler's own per-event path, which knows every answer and its message. One
-- row comes back per event applied, in order.

CREATE FUNCTION app.apply_refunds(
    refund_ids text[], payment_ids text[], amounts bigint[], currencies text[], job_ids bigint[])
RETURNS TABLE (refunded_total_cents bigint)
LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. coalesce(cardinality(refund_ids), 0) LOOP
        -- Records the refund if it fits the payment, which it locks, unless
        -- its reference exists. (ON CONFLICT, not a lookup: the function's
        -- plans are cached per session, and one made while app.refunds was
        -- small scanned the whole table for every refund after it grew.)
        INSERT INTO app.refunds (refund_id, payment_id, amount_cents, currency, job_id)
        SELECT refund_ids[i], p.id, amounts[i], currencies[i], job_ids[i]
        FROM app.payments AS p
        WHERE p.id = payment_ids[i] AND p.currency = currencies[i] AND amounts[i] > 0
          AND p.refunded_cents + amounts[i] <= p.amount_cents
        FOR UPDATE OF p
        ON CONFLICT (refund_id) DO NOTHING;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        -- The conditional write, checked on the locked row above.
        UPDATE app.payments AS p
        SET refunded_cents = p.refunded_cents + amounts[i],
            status = CASE WHEN p.refunded_cents + amounts[i] = p.amount_cents
                          THEN 'refunded' ELSE 'partially_refunded' END,
            updated_at = now()
        WHERE p.id = payment_ids[i]
        RETURNING p.refunded_cents INTO refunded_total_cents;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Reserves the seats of each booking (a conditional write that never
-- oversells a flight) and records the booking as awaiting its payment; the
-- caller collects the payments and confirms the bookings in one statement
-- each. The flight rows stay locked until commit, so a flight reserved here is
-- not cancelled before its bookings are confirmed.
CREATE FUNCTION app.reserve_bookings(
    request_ids text[], flight_ids text[], seats integer[], amounts bigint[], currencies text[])
RETURNS TABLE (seats_left integer)
LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. coalesce(cardinality(request_ids), 0) LOOP
        UPDATE app.flights AS f
        SET seats_available = f.seats_available - seats[i]
        WHERE f.id = flight_ids[i] AND f.status = 'scheduled' AND seats[i] > 0
          AND f.seats_available >= seats[i]
        RETURNING f.seats_available INTO seats_left;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        INSERT INTO app.bookings (request_id, flight_id, seats, amount_cents, currency, status)
        VALUES (request_ids[i], flight_ids[i], seats[i], amounts[i], currencies[i], 'awaiting_payment')
        ON CONFLICT (request_id) DO NOTHING;
        IF NOT FOUND THEN
            -- The booking exists already: its seats go back, its saga decides.
            UPDATE app.flights AS f SET seats_available = f.seats_available + seats[i] WHERE f.id = flight_ids[i];
            RETURN;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

REVOKE ALL ON FUNCTION app.apply_refunds(text[], text[], bigint[], text[], bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION app.reserve_bookings(text[], text[], integer[], bigint[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.apply_refunds(text[], text[], bigint[], text[], bigint[]) TO worker_consumer;
GRANT EXECUTE ON FUNCTION app.reserve_bookings(text[], text[], integer[], bigint[], text[]) TO worker_consumer;
