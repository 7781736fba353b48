import Foundation
import WorkerEngine

extension Job {
    /// The payload as the kind's event; one that does not decode is an invalid event.
    func decode<Event: Decodable>(_ type: Event.Type) throws -> Event {
        do {
            return try JSONDecoder().decode(Event.self, from: Data(payload.utf8))
        } catch {
            throw JobError.invalidEvent("\(kind) payload: \(error)")
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
