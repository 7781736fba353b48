-- 003: flight bookings, the saga of the seed practices. A booking reserves
-- seats, reserves itself, collects a payment and confirms; a failed step is
-- compensated in reverse order. The bookings row is the saga's persisted state.

CREATE TABLE app.flights (
    id              text        PRIMARY KEY,
    seats_total     integer     NOT NULL CHECK (seats_total > 0),
    seats_available integer     NOT NULL,
    -- scheduled | cancelled: a cancelled flight confirms no booking.
    status          text        NOT NULL DEFAULT 'scheduled' CHECK (status IN ('scheduled', 'cancelled')),
    -- Whatever a handler does, no seat is sold twice and capacity never goes below zero.
    CONSTRAINT flights_seats_within_capacity CHECK (seats_available BETWEEN 0 AND seats_total)
);

CREATE TABLE app.bookings (
    -- The producer's booking request id: one booking per request, whatever the duplicates.
    request_id   text        PRIMARY KEY,
    flight_id    text        NOT NULL REFERENCES app.flights (id),
    seats        integer     NOT NULL CHECK (seats > 0),
    amount_cents bigint      NOT NULL CHECK (amount_cents > 0),
    currency     char(3)     NOT NULL,
    -- requested -> seat_reserved -> awaiting_payment -> paid -> confirmed;
    -- any failed step -> cancelled, after its compensations.
    status       text        NOT NULL CHECK (status IN (
                     'requested', 'seat_reserved', 'awaiting_payment', 'paid', 'confirmed', 'cancelled')),
    -- The gateway's reference of the collected payment.
    payment_ref  text,
    -- Every failed step and compensation: {"step", "error", "at"}.
    failures     jsonb       NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX bookings_flight_idx ON app.bookings (flight_id, status);
