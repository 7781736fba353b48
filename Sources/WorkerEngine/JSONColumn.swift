import Foundation
import Synchronization

/// A jsonb column read as text, encoded as the JSON it holds rather than as a
/// string of it, so that `workerctl dlq show 4711 --json | jq .payload.refund_id`
/// works; text that does not parse stays a string, shown as it is. Encoded
/// with `RawJSONColumns` in the encoder's user info, the text goes into the
/// output as it is; otherwise its numbers pass through `Double`.
@propertyWrapper
public struct JSONColumn: Sendable, Equatable, Encodable {
    public var wrappedValue: String

    public init(wrappedValue: String) { self.wrappedValue = wrappedValue }

    public func encode(to encoder: any Encoder) throws {
        guard let value = try? JSONParser.parse(wrappedValue) else {
            var container = encoder.singleValueContainer()
            return try container.encode(wrappedValue)
        }
        if let raw = encoder.userInfo[RawJSONColumns.key] as? RawJSONColumns {
            var container = encoder.singleValueContainer()
            try container.encode(raw.placeholder(for: wrappedValue))
        } else {
            try value.encode(to: encoder)
        }
    }
}

/// The JSON columns of one encoding, put back as their own text once it is
/// done: `JSONEncoder` writes every number that is not an integer of 64 bits
/// through `Double`, which would print a payload's 123456789012345678901 or
/// 0.1000000000000000000001 rounded.
public final class RawJSONColumns: Sendable {
    public static let key = CodingUserInfoKey(rawValue: "worker.RawJSONColumns")!
    /// Unique to this encoding, so that no string of the data can pass for a placeholder.
    private let marker = "raw-json-\(UUID().uuidString)#"
    private let texts = Mutex<[String]>([])

    public init() {}

    func placeholder(for text: String) -> String {
        texts.withLock { texts in
            texts.append(text)
            return "\(marker)\(texts.count - 1)"
        }
    }

    /// `encoded` with each placeholder, quotes included, replaced by its column's text.
    public func substitute(in encoded: String) -> String {
        let texts = texts.withLock { $0 }
        let pieces = encoded.components(separatedBy: "\"\(marker)")
        var output = pieces[0]
        for piece in pieces.dropFirst() {
            guard let quote = piece.firstIndex(of: "\""), let index = Int(piece[..<quote]), texts.indices.contains(index)
            else { output += "\"\(marker)" + piece; continue }  // not ours: cannot happen, kept as it was
            output += texts[index] + piece[piece.index(after: quote)...]
        }
        return output
    }
}
