import WorkerEngine

/// An event read field by field from its parsed payload (`Job.document`):
/// refunds and bookings are read three times per job (lock order, key, work),
/// and JSONDecoder took an eighth of workerd's CPU time doing so.
protocol FieldDecodable {
    init(_ fields: EventFields) throws
}

extension Job {
    /// The payload as the kind's event; one that does not read is an invalid event.
    func decode<Event: FieldDecodable>(_ type: Event.Type) throws -> Event {
        do {
            guard case .object(let fields)? = document else {
                throw EventFields.Problem(document == nil ? "the payload is not JSON" : "the payload is not an object")
            }
            return try Event(EventFields(fields: fields))
        } catch {
            throw JobError.invalidEvent("\(kind) payload: \(error)")
        }
    }
}

/// The fields of an event's JSON object, read by name as the type its handler needs.
struct EventFields {
    let fields: [String: JSONValue]

    struct Problem: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    func string(_ name: String) throws -> String {
        guard case .string(let text)? = fields[name] else { throw Problem("\(name) is not a string") }
        return text
    }

    func integer(_ name: String) throws -> Int64 {
        switch fields[name] {
        case .integer(let value)?: return value
        case .number(let value)? where value.rounded() == value && abs(value) < 9.0e15: return Int64(value)
        default: throw Problem("\(name) is not an integer")
        }
    }

    func number(_ name: String) throws -> Double {
        switch fields[name] {
        case .integer(let value)?: return Double(value)
        case .number(let value)?: return value
        default: throw Problem("\(name) is not a number")
        }
    }

    func bool(_ name: String) throws -> Bool {
        guard case .bool(let value)? = fields[name] else { throw Problem("\(name) is not a boolean") }
        return value
    }

    /// A field that may be missing or null, read with `read` when it is there.
    func optional<Value>(_ name: String, _ read: (String) throws -> Value) throws -> Value? {
        switch fields[name] {
        case nil, .null?: nil
        default: try read(name)
        }
    }
}

extension EventSchema {
    /// A schema compiled into the binary, so it cannot be missing at run time;
    /// EventValidationTests proves each one loads.
    static func compiledIn(_ bytes: [UInt8], name: String) -> EventSchema {
        try! EventSchema(json: String(decoding: bytes, as: UTF8.self), source: name)
    }
}

extension JobResult {
    /// A result from a JSON object, keys sorted so equal results compare equal.
    static func object(_ fields: [String: JSONValue]) -> JobResult {
        JobResult(json: JSONValue.object(fields).jsonText)
    }
}
