import Foundation

/// A JSON Schema (the subset event contracts need: `type`, `properties`,
/// `required`, `additionalProperties`, `enum`, `const`, `minimum`, `maximum`,
/// `exclusiveMinimum`, `minLength`, `maxLength`, `pattern`, `items`,
/// `minItems`, `maxItems`) that a kind's payloads must satisfy before any
/// effect. An unsupported keyword is an error when the schema loads, so a
/// schema never promises a check it does not make.
public struct EventSchema: Sendable {
    private let root: SchemaNode
    public let source: String

    static let supported: Set<String> = [
        "$schema", "$id", "title", "description", "examples", "type", "properties", "required",
        "additionalProperties", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "minLength", "maxLength",
        "pattern", "items", "minItems", "maxItems",
    ]

    public init(json: String, source: String) throws {
        self.source = source
        let schema: JSONValue
        do {
            schema = try JSONValue(parsing: json)
        } catch {
            throw EventSchemaError(source: source, message: "not JSON: \(error)")
        }
        root = try SchemaNode(schema, at: "#", source: source)
    }

    /// Every way `payload` breaks the schema, each naming its field, or
    /// `nil` when it conforms: whoever fixes the producer sees all of them
    /// in the dead letter at once, not one per redrive.
    public func violation(in payload: String) -> String? {
        violation(in: try? JSONValue(parsing: payload))
    }

    /// The same for a payload parsed already (`nil`: it is not JSON).
    public func violation(in payload: JSONValue?) -> String? {
        guard let payload else { return "payload is not JSON" }
        var problems: [String] = []
        collect(root, payload, at: "$", into: &problems)
        guard !problems.isEmpty else { return nil }
        let shown = problems.prefix(Self.mostShown)
        return shown.joined(separator: "; ")
            + (problems.count > shown.count ? "; and \(problems.count - shown.count) more" : "")
    }

    /// Enough to see a pattern (a producer that sends every field wrong)
    /// without a dead letter's error growing with the payload.
    static let mostShown = 5

    private func collect(_ s: SchemaNode, _ value: JSONValue, at path: String, into problems: inout [String]) {
        if let type = s.type, value.types.isDisjoint(with: type.accepted) {
            // The value's other checks are about a type it does not have.
            return problems.append("\(path): expected \(type.names.joined(separator: " or ")), got \(Self.describe(value))")
        }
        if let allowed = s.allowed, !allowed.contains(value) {
            problems.append("\(path): \(Self.describe(value)) is not one of the allowed values")
        }
        if let constant = s.constant, constant != value {
            problems.append("\(path): must be \(Self.describe(constant))")
        }
        if let number = value.numeric {
            if let minimum = s.minimum, number < minimum {
                problems.append("\(path): \(Self.describe(value)) is below the minimum \(Self.format(minimum))")
            }
            if let floor = s.exclusiveMinimum, number <= floor {
                problems.append("\(path): \(Self.describe(value)) must be greater than \(Self.format(floor))")
            }
            if let maximum = s.maximum, number > maximum {
                problems.append("\(path): \(Self.describe(value)) is above the maximum \(Self.format(maximum))")
            }
        }
        if case .string(let text) = value {
            // JSON Schema counts code points; Swift's `count`, grapheme
            // clusters, let 1,000 code points of flags pass a maxLength of 500.
            let length = Double(text.unicodeScalars.count)
            if let minimum = s.minLength, length < minimum { problems.append("\(path): shorter than \(Self.format(minimum)) characters") }
            if let maximum = s.maxLength, length > maximum { problems.append("\(path): longer than \(Self.format(maximum)) characters") }
            if let pattern = s.pattern,
               pattern.regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) == nil {
                problems.append("\(path): does not match \(pattern.source)")
            }
        }
        if case .array(let elements) = value {
            if let minimum = s.minItems, Double(elements.count) < minimum { problems.append("\(path): fewer than \(Self.format(minimum)) items") }
            if let maximum = s.maxItems, Double(elements.count) > maximum { problems.append("\(path): more than \(Self.format(maximum)) items") }
            if let items = s.items {
                for (index, element) in elements.enumerated() {
                    collect(items, element, at: "\(path)[\(index)]", into: &problems)
                }
            }
        }
        if case .object(let fields) = value {
            for name in s.required where fields[name] == nil { problems.append("\(path).\(name): missing") }
            for name in fields.keys.sorted() {
                if let property = s.properties[name] {
                    collect(property, fields[name]!, at: "\(path).\(name)", into: &problems)
                } else if s.closed {
                    problems.append("\(path).\(name): unknown field")
                }
            }
        }
    }

    private static func describe(_ value: JSONValue) -> String {
        switch value {
        case .null: "null"
        case .bool(let b): "\(b)"
        case .integer(let i): "\(i)"
        case .number(let n): format(n)
        case .string(let s): s.count > 40 ? "a string of \(s.count) characters" : "\"\(s)\""
        case .array(let a): "an array of \(a.count)"
        case .object: "an object"
        }
    }

    private static func format(_ number: Double) -> String {
        number.rounded() == number && abs(number) < 1e15 ? String(Int64(number)) : String(number)
    }
}

/// One schema object, its keywords read when the schema loads: a check
/// looks nothing up by name. (Reading them from the parsed schema at every
/// check, about ten hash lookups and a set of type names per field, was a
/// tenth of workerd's CPU time in a realistic drain.)
private final class SchemaNode: Sendable {
    let type: (names: [String], accepted: JSONTypes)?
    let allowed: [JSONValue]?
    let constant: JSONValue?
    let minimum, exclusiveMinimum, maximum: Double?
    let minLength, maxLength, minItems, maxItems: Double?
    let pattern: CompiledPattern?
    let items: SchemaNode?
    let required: [String]
    let properties: [String: SchemaNode]
    /// `additionalProperties: false`
    let closed: Bool

    init(_ schema: JSONValue, at path: String, source: String) throws {
        guard case .object(let keywords) = schema else {
            throw EventSchemaError(source: source, message: "\(path) is not a schema object")
        }
        for keyword in keywords.keys where !EventSchema.supported.contains(keyword) {
            throw EventSchemaError(source: source, message: "\(path): unsupported keyword '\(keyword)'")
        }
        type = keywords["type"].map { expected in
            let names: [String] = switch expected {
            case .string(let name): [name]
            case .array(let list): list.compactMap { if case .string(let n) = $0 { n } else { nil } }
            default: []
            }
            return (names, names.reduce(into: JSONTypes()) { $0.formUnion(JSONTypes(named: $1)) })
        }
        if case .array(let values)? = keywords["enum"] { allowed = values } else { allowed = nil }
        constant = keywords["const"]
        minimum = keywords["minimum"]?.numeric
        exclusiveMinimum = keywords["exclusiveMinimum"]?.numeric
        maximum = keywords["maximum"]?.numeric
        minLength = keywords["minLength"]?.numeric
        maxLength = keywords["maxLength"]?.numeric
        minItems = keywords["minItems"]?.numeric
        maxItems = keywords["maxItems"]?.numeric
        if case .string(let text)? = keywords["pattern"] {
            guard let regex = try? NSRegularExpression(pattern: CompiledPattern.icu(fromECMA: text)) else {
                throw EventSchemaError(source: source, message: "\(path): invalid pattern '\(text)'")
            }
            pattern = CompiledPattern(source: text, regex: regex)
        } else {
            pattern = nil
        }
        items = try keywords["items"].map { try SchemaNode($0, at: "\(path)/items", source: source) }
        if case .array(let names)? = keywords["required"] {
            required = names.compactMap { if case .string(let name) = $0 { name } else { nil } }
        } else {
            required = []
        }
        var properties: [String: SchemaNode] = [:]
        if case .object(let declared)? = keywords["properties"] {
            for (name, property) in declared {
                properties[name] = try SchemaNode(property, at: "\(path)/properties/\(name)", source: source)
            }
        }
        self.properties = properties
        closed = keywords["additionalProperties"] == .bool(false)
    }
}

/// The JSON Schema types a value has (an integer is also a number).
private struct JSONTypes: OptionSet, Sendable {
    let rawValue: UInt8
    static let null = JSONTypes(rawValue: 1 << 0)
    static let boolean = JSONTypes(rawValue: 1 << 1)
    static let integer = JSONTypes(rawValue: 1 << 2)
    static let number = JSONTypes(rawValue: 1 << 3)
    static let string = JSONTypes(rawValue: 1 << 4)
    static let array = JSONTypes(rawValue: 1 << 5)
    static let object = JSONTypes(rawValue: 1 << 6)

    init(rawValue: UInt8) { self.rawValue = rawValue }

    /// An unknown name accepts nothing.
    init(named name: String) {
        self = switch name {
        case "null": .null
        case "boolean": .boolean
        case "integer": .integer
        case "number": .number
        case "string": .string
        case "array": .array
        case "object": .object
        default: []
        }
    }
}

extension JSONValue {
    fileprivate var types: JSONTypes {
        switch self {
        case .null: .null
        case .bool: .boolean
        case .integer: [.integer, .number]
        case .number(let n): n.rounded() == n && abs(n) < 9.0e15 ? [.integer, .number] : .number
        case .string: .string
        case .array: .array
        case .object: .object
        }
    }
}

/// A schema's compiled `pattern`. NSRegularExpression is immutable once made
/// and documented as safe to use from any thread.
private struct CompiledPattern: @unchecked Sendable {
    let source: String
    let regex: NSRegularExpression

    /// JSON Schema patterns are ECMA-262 regular expressions; ICU's differ
    /// where it matters for ids. ICU's `$` also matches before a final line
    /// break, so `^[a-z]+$` let "rf_1\n" through, a second refund id for the
    /// same refund; and its `\d` and `\w` take any script's digits and
    /// letters. Outside a character class `$` becomes `\z`; `\d`, `\w`, `\D`
    /// and `\W` become ASCII sets, nested inside a class (after a nested set
    /// ICU reads a `-` as itself, as ECMA does after `\w`).
    static func icu(fromECMA pattern: String) -> String {
        let sets: [Unicode.Scalar: String] = ["d": "[0-9]", "w": "[A-Za-z0-9_]", "D": "[^0-9]", "W": "[^A-Za-z0-9_]"]
        var out = "", inClass = false
        var scalars = pattern.unicodeScalars.makeIterator()
        while let c = scalars.next() {
            switch c {
            case "\\":
                guard let escaped = scalars.next() else { out.unicodeScalars.append(c); break }
                if let set = sets[escaped] {
                    out += set
                } else {
                    out.unicodeScalars.append(c)
                    out.unicodeScalars.append(escaped)
                }
            case "[", "]":
                inClass = c == "["
                out.unicodeScalars.append(c)
            case "$" where !inClass:
                out += "\\z"
            default:
                out.unicodeScalars.append(c)
            }
        }
        return out
    }
}

public struct EventSchemaError: Error, CustomStringConvertible {
    public var source: String
    public var message: String
    public var description: String { "event schema \(source): \(message)" }
}
