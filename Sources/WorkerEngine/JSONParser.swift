/// Reads JSON text into a ``JSONValue``. Written by hand: every event is
/// validated against its schema before anything else, and parsing payloads
/// with JSONDecoder (which tries each type in turn, throwing on each miss) was
/// an eighth of workerd's CPU time in a refund and booking drain.
struct JSONParser {
    private let bytes: [UInt8]
    private var index = 0
    /// Nesting allowed before the text is refused (no stack overflow on `[[[[...`).
    private static let maxDepth = 512

    static func parse(_ text: String) throws(JSONParseError) -> JSONValue {
        var parser = JSONParser(bytes: Array(text.utf8))
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        guard parser.index == parser.bytes.count else { throw parser.error("unexpected text after the value") }
        return value
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private mutating func value(depth: Int) throws(JSONParseError) -> JSONValue {
        guard depth < Self.maxDepth else { throw error("nested deeper than \(Self.maxDepth) levels") }
        skipWhitespace()
        guard index < bytes.count else { throw error("unexpected end of text") }
        switch bytes[index] {
        case UInt8(ascii: "{"):
            index += 1
            var fields: [String: JSONValue] = [:]
            skipWhitespace()
            if peek(UInt8(ascii: "}")) { return .object(fields) }
            repeat {
                skipWhitespace()
                guard peek(UInt8(ascii: "\""), consume: false) else { throw error("expected a field name") }
                let key = try string()
                skipWhitespace()
                guard peek(UInt8(ascii: ":")) else { throw error("expected ':'") }
                fields[key] = try value(depth: depth + 1)
                skipWhitespace()
            } while peek(UInt8(ascii: ","))
            guard peek(UInt8(ascii: "}")) else { throw error("expected ',' or '}'") }
            return .object(fields)
        case UInt8(ascii: "["):
            index += 1
            var items: [JSONValue] = []
            skipWhitespace()
            if peek(UInt8(ascii: "]")) { return .array(items) }
            repeat {
                items.append(try value(depth: depth + 1))
                skipWhitespace()
            } while peek(UInt8(ascii: ","))
            guard peek(UInt8(ascii: "]")) else { throw error("expected ',' or ']'") }
            return .array(items)
        case UInt8(ascii: "\""):
            return .string(try string())
        case UInt8(ascii: "t"):
            try literal("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try literal("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        default:
            return try number()
        }
    }

    private mutating func skipWhitespace() {
        while index < bytes.count, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[index]) { index += 1 }
    }

    /// Whether the next byte is `byte`; consumed if so (unless told not to).
    private mutating func peek(_ byte: UInt8, consume: Bool = true) -> Bool {
        guard index < bytes.count, bytes[index] == byte else { return false }
        if consume { index += 1 }
        return true
    }

    private mutating func literal(_ word: String) throws(JSONParseError) {
        let expected = word.utf8
        guard bytes[index...].starts(with: expected) else { throw error("unknown literal") }
        index += expected.count
    }

    private mutating func number() throws(JSONParseError) -> JSONValue {
        let start = index
        func digits() -> Int {
            let from = index
            while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
            return index - from
        }
        _ = peek(UInt8(ascii: "-"))
        let integerDigits = digits()
        guard integerDigits > 0 else { throw error("unexpected character") }
        guard integerDigits == 1 || bytes[index - integerDigits] != UInt8(ascii: "0") else {
            throw error("a number may not start with 0")
        }
        var isInteger = true
        if peek(UInt8(ascii: ".")) {
            isInteger = false
            guard digits() > 0 else { throw error("expected a digit after '.'") }
        }
        if peek(UInt8(ascii: "e")) || peek(UInt8(ascii: "E")) {
            isInteger = false
            _ = peek(UInt8(ascii: "+")) || peek(UInt8(ascii: "-"))
            guard digits() > 0 else { throw error("expected a digit in the exponent") }
        }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        if isInteger, let integer = Int64(text) { return .integer(integer) }
        guard let number = Double(text) else { throw error("unreadable number") }
        return .number(number)
    }

    private mutating func string() throws(JSONParseError) -> String {
        index += 1  // the opening quote
        var utf8: [UInt8] = []
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                return String(decoding: utf8, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard index < bytes.count else { break }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(escape)
                case UInt8(ascii: "b"): utf8.append(0x08)
                case UInt8(ascii: "f"): utf8.append(0x0C)
                case UInt8(ascii: "n"): utf8.append(0x0A)
                case UInt8(ascii: "r"): utf8.append(0x0D)
                case UInt8(ascii: "t"): utf8.append(0x09)
                case UInt8(ascii: "u"): utf8.append(contentsOf: try unicodeEscape())
                default: throw error("unknown escape")
                }
            case 0..<0x20:
                throw error("control character in a string")
            default:
                utf8.append(byte)
            }
        }
        throw error("unterminated string")
    }

    /// `\uXXXX` (after the `u`), with a surrogate pair read as one scalar.
    private mutating func unicodeEscape() throws(JSONParseError) -> String.UTF8View {
        var code = try hex4()
        if (0xD800..<0xDC00).contains(code) {
            guard peek(UInt8(ascii: "\\")), peek(UInt8(ascii: "u")) else { throw error("unpaired surrogate") }
            let low = try hex4()
            guard (0xDC00..<0xE000).contains(low) else { throw error("unpaired surrogate") }
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
        }
        guard let scalar = Unicode.Scalar(code) else { throw error("unpaired surrogate") }
        return String(Character(scalar)).utf8
    }

    private mutating func hex4() throws(JSONParseError) -> UInt32 {
        var code: UInt32 = 0
        for _ in 0..<4 {
            guard index < bytes.count, let digit = Self.hexDigit(bytes[index]) else { throw error("expected four hex digits") }
            code = code << 4 | digit
            index += 1
        }
        return code
    }

    private static func hexDigit(_ byte: UInt8) -> UInt32? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt32(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt32(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }

    private func error(_ message: String) -> JSONParseError {
        JSONParseError(message: message, offset: index)
    }
}

/// Why text is not JSON, and where.
struct JSONParseError: Error, CustomStringConvertible {
    var message: String
    var offset: Int
    var description: String { "\(message) at byte \(offset)" }
}
