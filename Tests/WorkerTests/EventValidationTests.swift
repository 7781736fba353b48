import Foundation
import Testing
import WorkerEngine
import WorkerHandlers
import WorkerTestSupport

/// Payloads are checked against their kind's published schema before any effect.
@Suite(.timeLimit(.minutes(2))) struct EventValidationTests {
    var refund: EventSchema {
        get throws { try #require(HandlerRegistry.standard().handler(for: "refund.requested")?.schema) }
    }

    static let invalidRefunds: [(payload: String, message: String)] = [
        (#"["rf_1", "pay_1", 500, "EUR"]"#, "$: expected object, got an array of 4"),
        (#"{"refund_id": "rf_1", "payment_id": "pay_1", "currency": "EUR"}"#, "$.amount_cents: missing"),
        (#"{"refund_id": "rf_1", "payment_id": "pay_1", "amount_cents": "500", "currency": "EUR"}"#, #"$.amount_cents: expected integer, got "500""#),
        (#"{"refund_id": "rf_1", "payment_id": "pay_1", "amount_cents": 5.5, "currency": "EUR"}"#, "$.amount_cents: expected integer, got 5.5"),
        (#"{"refund_id": "rf_1", "payment_id": "pay_1", "amount_cents": -500, "currency": "EUR"}"#, "$.amount_cents: -500 is below the minimum 1"),
        (#"{"refund_id": "rf_1", "payment_id": "pay_1", "amount_cents": 900000000000000, "currency": "EUR"}"#, "is above the maximum 100000000000"),
        (#"{"refund_id": "rf_1", "payment_id": "pay_1", "amount_cents": 500, "currency": "euro"}"#, "$.currency: does not match"),
        (#"{"refund_id": "rf'; DROP TABLE app.payments; --", "payment_id": "pay_1", "amount_cents": 500, "currency": "EUR"}"#, "$.refund_id: does not match"),
        (#"{"refund_id": "rf_1", "payment_id": "pay_1", "amount_cents": 500, "currency": "EUR", "extra": 1}"#, "$.extra: unknown field"),
        (#"{"refund_id": null, "payment_id": "pay_1", "amount_cents": 500, "currency": "EUR"}"#, "$.refund_id: expected string, got null"),
        // Another refund id for the same refund, had `$` matched before a final line break.
        (#"{"refund_id": "rf_1\n", "payment_id": "pay_1", "amount_cents": 500, "currency": "EUR"}"#, "$.refund_id: does not match"),
        (#"{"refund_id": "rf_1\r\n", "payment_id": "pay_1", "amount_cents": 500, "currency": "EUR"}"#, "$.refund_id: does not match"),
        (#"{"refund_id": "rf_1\u2028", "payment_id": "pay_1", "amount_cents": 500, "currency": "EUR"}"#, "$.refund_id: does not match"),
        (#"{"refund_id": "rf_1", "payment_id": "pay_1", "amount_cents": 500, "currency": "EUR\n"}"#, "$.currency: does not match"),
    ]

    @Test func thePublishedRefundSchemaNamesEachProblem() throws {
        for (payload, message) in Self.invalidRefunds {
            let problem = try refund.violation(in: payload)
            #expect(problem?.contains(message) == true, "\(payload): \(problem ?? "accepted")")
        }
        #expect(try refund.violation(in: #"{"refund_id": "rf_1", "payment_id": "pay_1", "amount_cents": 500, "currency": "EUR"}"#) == nil)
    }

    /// A dead letter names every problem of its event, so that a producer is
    /// fixed once, not once per redrive; past five, it counts the rest.
    @Test func everyProblemOfAPayloadIsNamedInOrder() throws {
        #expect(try refund.violation(in: #"{"refund_id": "rf_1", "payment_id": "pay_1"}"#)
                == "$.amount_cents: missing; $.currency: missing")
        #expect(try refund.violation(in: #"{"refund_id": 7, "payment_id": "pay_1", "amount_cents": -5, "currency": "euro", "x": 1}"#)
                == "$.amount_cents: -5 is below the minimum 1; $.currency: does not match ^[A-Z]{3}$; "
                + "$.refund_id: expected string, got 7; $.x: unknown field")
        let many = #"{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7}"#
        let problem = try #require(try refund.violation(in: many))
        #expect(problem.hasPrefix("$.refund_id: missing; $.payment_id: missing; $.amount_cents: missing; $.currency: missing; $.a: unknown field; and 6 more"), "\(problem)")
    }

    @Test func thePublishedBookingSchemaNamesEachProblem() throws {
        let booking = try #require(HandlerRegistry.standard().handler(for: "booking.requested")?.schema)
        let cases: [(String, String)] = [
            (#"{"request_id": "b", "flight_id": "LH400", "seats": 0, "amount_cents": 100, "currency": "EUR"}"#, "$.seats: 0 is below the minimum 1"),
            (#"{"request_id": "b", "flight_id": "LH400", "seats": 40, "amount_cents": 100, "currency": "EUR"}"#, "$.seats: 40 is above the maximum 9"),
            (#"{"request_id": "b", "flight_id": "LH400", "seats": "2", "amount_cents": 100, "currency": "EUR"}"#, "$.seats: expected integer"),
            (#"{"request_id": "b", "seats": 1, "amount_cents": 100, "currency": "EUR"}"#, "$.flight_id: missing"),
            (#"{"request_id": "b", "flight_id": "LH400", "seats": 1, "amount_cents": -1, "currency": "EUR"}"#, "$.amount_cents: -1 is below the minimum 1"),
        ]
        for (payload, message) in cases {
            let problem = booking.violation(in: payload)
            #expect(problem?.contains(message) == true, "\(payload): \(problem ?? "accepted")")
        }
        #expect(booking.violation(in: #"{"request_id": "b", "flight_id": "LH400", "seats": 2, "amount_cents": 100, "currency": "EUR"}"#) == nil)
    }

    @Test func resultsAreWrittenAsJSONThatReadsBackTheSame() throws {
        let value = JSONValue.object([
            "text": .string("quote \" backslash \\ newline \n tab \t bell \u{7} é"),
            "count": .integer(-42), "ratio": .number(0.5), "flags": .array([.bool(true), .null]),
        ])
        #expect(value.jsonText.hasPrefix(#"{"count":-42,"flags":[true,null],"ratio":0.5,"text":"quote \"#))
        #expect(value.jsonText.contains(#"bell \u0007"#))
        #expect(try JSONValue(parsing: value.jsonText) == value)
    }

    @Test func jsonTextIsReadAsTheStandardSays() throws {
        let valid: [(String, JSONValue)] = [
            (#" {"a": [1, -0, 2.5, 1e3, -1.5E-2, true, false, null], "b": {}} "#,
             .object(["a": .array([.integer(1), .integer(0), .number(2.5), .number(1000), .number(-0.015), .bool(true), .bool(false), .null]),
                      "b": .object([:])])),
            (#""tab\t quote\" slash\/ back\\ \u00e9 \ud83d\ude00""#, .string("tab\t quote\" slash/ back\\ \u{e9} \u{1F600}")),
            ("\"\u{e9} \u{1F600}\"", .string("\u{e9} \u{1F600}")),
            ("92233720368547758070", .number(92_233_720_368_547_758_080)),  // the nearest Double
            ("[]", .array([])),
        ]
        for (text, expected) in valid {
            #expect(try JSONValue(parsing: text) == expected, "\(text)")
        }
        let invalid = ["", "{", "[1,]", #"{"a" 1}"#, "01", "1.", "-", "tru", #""open"#, "1 2", #""\ud800""#, "\"a\u{1}b\"",
                       String(repeating: "[", count: 600) + String(repeating: "]", count: 600)]
        for text in invalid {
            #expect(throws: (any Error).self, "\(text.prefix(20))") { try JSONValue(parsing: text) }
        }
    }

    @Test func everySupportedKeywordIsChecked() throws {
        let schema = try EventSchema(json: #"""
            {"type": "object", "required": ["mode"], "properties": {
              "mode": {"enum": ["fast", "safe"]},
              "version": {"const": 2},
              "ratio": {"type": ["number", "null"], "exclusiveMinimum": 0},
              "name": {"type": "string", "minLength": 2, "maxLength": 4},
              "tags": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string", "pattern": "^[a-z]+$"}}
            }}
            """#, source: "test")
        let cases: [(String, String?)] = [
            (#"{"mode": "fast", "version": 2, "ratio": null, "name": "ab", "tags": ["x", "y"]}"#, nil),
            (#"{"mode": "slow"}"#, #"$.mode: "slow" is not one of the allowed values"#),
            (#"{"mode": "safe", "version": 3}"#, "$.version: must be 2"),
            (#"{"mode": "safe", "ratio": 0}"#, "$.ratio: 0 must be greater than 0"),
            (#"{"mode": "safe", "ratio": "1"}"#, #"$.ratio: expected number or null, got "1""#),
            (#"{"mode": "safe", "name": "a"}"#, "$.name: shorter than 2 characters"),
            (#"{"mode": "safe", "name": "abcde"}"#, "$.name: longer than 4 characters"),
            (#"{"mode": "safe", "tags": []}"#, "$.tags: fewer than 1 items"),
            (#"{"mode": "safe", "tags": ["a", "b", "c"]}"#, "$.tags: more than 2 items"),
            (#"{"mode": "safe", "tags": ["a", "B"]}"#, "$.tags[1]: does not match ^[a-z]+$"),
            (#"{"version": 2}"#, "$.mode: missing"),
        ]
        for (payload, message) in cases {
            #expect(schema.violation(in: payload) == message, "\(payload)")
        }
        #expect(throws: EventSchemaError.self) {
            try EventSchema(json: #"{"properties": {"a": {"pattern": "(unclosed"}}}"#, source: "test")
        }
    }

    /// Patterns read as ECMA-262, as JSON Schema says, not as ICU would;
    /// lengths count code points.
    @Test func patternsAndLengthsFollowJSONSchemaNotFoundation() throws {
        let schema = try EventSchema(json: #"""
            {"properties": {"code": {"pattern": "^\\d+-\\w$"}, "cost": {"pattern": "[$]\\d$"},
                            "slug": {"pattern": "^[\\w-.]+$"}, "name": {"maxLength": 3}}}
            """#, source: "test")
        let cases: [(String, String?)] = [
            (#"{"code": "42-a"}"#, nil),
            (#"{"code": "42-a\n"}"#, "$.code: does not match ^\\d+-\\w$"),
            (#"{"code": "\u0664\u0662-a"}"#, "$.code: does not match ^\\d+-\\w$"),  // Arabic-Indic digits
            (#"{"code": "42-\u00e9"}"#, "$.code: does not match ^\\d+-\\w$"),
            (#"{"cost": "$5"}"#, nil),
            (#"{"slug": "a-b_1.c"}"#, nil),  // a `-` after `\w` in a class is itself, not a range
            (#"{"slug": "a`b"}"#, "$.slug: does not match ^[\\w-.]+$"),
            (#"{"name": "abc"}"#, nil),
            // Two flags: two characters to Swift, four code points to JSON Schema.
            (#"{"name": "\ud83c\uddea\ud83c\uddfa\ud83c\uddea\ud83c\uddfa"}"#, "$.name: longer than 3 characters"),
        ]
        for (payload, message) in cases {
            #expect(schema.violation(in: payload) == message, "\(payload)")
        }
    }

    @Test func aSchemaWithAKeywordThatIsNotCheckedDoesNotLoad() {
        #expect(throws: EventSchemaError.self) {
            try EventSchema(json: #"{"type": "object", "oneOf": []}"#, source: "test")
        }
        #expect(throws: EventSchemaError.self) {
            try EventSchema(json: #"{"properties": {"a": {"format": "email"}}}"#, source: "test")
        }
    }

    @Test func invalidEventsAreDeadLetteredAtOnceBeforeAnyEffectAndGoodOnesFlowAround() async throws {
        try await withTestDatabase { db in
            try await db.execute("INSERT INTO app.payments (id, amount_cents, currency) VALUES ('pay_1', 10000, 'EUR')")
            var invalid: [Int64: String] = [:]
            for (payload, message) in Self.invalidRefunds {
                invalid[try await db.queue.enqueue(NewJob(kind: "refund.requested", payload: payload))] = message
            }
            let huge = #"{"refund_id": "rf_huge", "payment_id": "pay_1", "amount_cents": 1, "currency": "EUR", "reason": ""#
                + String(repeating: "x", count: 70_000) + #""}"#
            invalid[try await db.queue.enqueue(NewJob(kind: "refund.requested", payload: huge))] = "over the limit of 65536"
            invalid[try await db.queue.enqueue(NewJob(kind: "refund.reqested", payload: "{}"))] = "unknown kind 'refund.reqested'"
            // JSON to jsonb, past what workerd reads: the reason says how.
            let deep = String(repeating: #"{"a": "#, count: 600) + "1" + String(repeating: "}", count: 600)
            invalid[try await db.queue.enqueue(NewJob(kind: "refund.requested", payload: deep))] = "payload not read: nested deeper than 512 levels"
            let good = try await db.queue.enqueue(NewJob(
                kind: "refund.requested", payload: #"{"refund_id": "rf_ok", "payment_id": "pay_1", "amount_cents": 500, "currency": "EUR"}"#))

            let processor = BatchProcessor(client: db.client, handlers: .standard(), workerID: "w", logger: db.logger)
            let outcomes = try await processor.process(
                try await db.queue.claim(queue: "default", limit: 100, visibilityTimeout: .seconds(30), workerID: "w"))
            #expect(outcomes.count == invalid.count + 1)
            #expect(outcomes.contains(.done(jobID: good)))

            #expect(try await db.jobCount() == 0)
            #expect(try await db.int("SELECT refunded_cents::int FROM app.payments") == 500)
            #expect(try await db.int("SELECT count(*)::int FROM worker.idempotency_keys") == 1)
            for (id, message) in invalid {
                let letter = try #require(try await db.deadLetters.show(id: id))
                #expect(letter.reason == "invalid_event" && letter.attempts == 1)
                #expect(letter.lastError?.contains(message) == true, "job \(id): \(letter.lastError ?? "-")")
            }
        }
    }
}
