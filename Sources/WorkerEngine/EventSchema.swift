import Foundation

/// A JSON Schema (the subset event contracts need: `type`, `properties`,
/// `required`, `additionalProperties`, `enum`, `const`, `minimum`, `maximum`,
/// `exclusiveMinimum`, `minLength`, `maxLength`, `pattern`, `items`,
/// `minItems`, `maxItems`) that a kind's payloads must satisfy before any
/// effect. An unsupported keyword is an error when the schema loads, so a
/// schema never promises a check it does not make.
public struct EventSchema: Sendable {
    private let root: JSONValue
    public let source: String
    /// Each `pattern` of the schema, compiled once (compiling one per check
    /// was a fifteenth of workerd's CPU time in a realistic drain).
    private let patterns: [String: CompiledPattern]

    static let supported: Set<String> = [
        "$schema", "$id", "title", "description", "examples", "type", "properties", "required",
        "additionalProperties", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "minLength", "maxLength",
        "pattern", "items", "minItems", "maxItems",
    ]

    public init(json: String, source: String) throws {
        self.source = source
        do {
            root = try JSONValue(parsing: json)
        } catch {
            throw EventSchemaError(source: source, message: "not JSON: \(error)")
        }
        var patterns: [String: CompiledPattern] = [:]
        try Self.check(root, at: "#", source: source, patterns: &patterns)
        self.patterns = patterns
    }

    private static func check(
        _ schema: JSONValue, at path: String, source: String, patterns: inout [String: CompiledPattern]
    ) throws {
        guard case .object(let keywords) = schema else {
            throw EventSchemaError(source: source, message: "\(path) is not a schema object")
        }
        for (keyword, value) in keywords {
            guard supported.contains(keyword) else {
                throw EventSchemaError(source: source, message: "\(path): unsupported keyword '\(keyword)'")
            }
            if keyword == "pattern", case .string(let pattern) = value {
                guard let regex = try? NSRegularExpression(pattern: pattern) else {
                    throw EventSchemaError(source: source, message: "\(path): invalid pattern '\(pattern)'")
                }
                patterns[pattern] = CompiledPattern(regex: regex)
            }
        }
        if case .object(let properties)? = keywords["properties"] {
            for (name, property) in properties {
                try check(property, at: "\(path)/properties/\(name)", source: source, patterns: &patterns)
            }
        }
        if let items = keywords["items"] { try check(items, at: "\(path)/items", source: source, patterns: &patterns) }
    }

    /// The first way `payload` breaks the schema, as a message naming the
    /// field, or `nil` when it conforms.
    public func violation(in payload: String) -> String? {
        violation(in: try? JSONValue(parsing: payload))
    }

    /// The same for a payload parsed already (`nil`: it is not JSON).
    public func violation(in payload: JSONValue?) -> String? {
        guard let payload else { return "payload is not JSON" }
        return violation(of: root, by: payload, at: "$")
    }

    private func violation(of schema: JSONValue, by value: JSONValue, at path: String) -> String? {
        guard case .object(let s) = schema else { return nil }
        if let expected = s["type"] {
            let names: [String] = switch expected {
            case .string(let name): [name]
            case .array(let list): list.compactMap { if case .string(let n) = $0 { n } else { nil } }
            default: []
            }
            if value.typeNames.isDisjoint(with: names) {
                return "\(path): expected \(names.joined(separator: " or ")), got \(Self.describe(value))"
            }
        }
        if case .array(let allowed)? = s["enum"], !allowed.contains(value) {
            return "\(path): \(Self.describe(value)) is not one of the allowed values"
        }
        if let constant = s["const"], constant != value {
            return "\(path): must be \(Self.describe(constant))"
        }
        if let number = value.numeric {
            if let minimum = s["minimum"]?.numeric, number < minimum { return "\(path): \(Self.describe(value)) is below the minimum \(Self.format(minimum))" }
            if let floor = s["exclusiveMinimum"]?.numeric, number <= floor { return "\(path): \(Self.describe(value)) must be greater than \(Self.format(floor))" }
            if let maximum = s["maximum"]?.numeric, number > maximum { return "\(path): \(Self.describe(value)) is above the maximum \(Self.format(maximum))" }
        }
        if case .string(let text) = value {
            if let minimum = s["minLength"]?.numeric, Double(text.count) < minimum { return "\(path): shorter than \(Self.format(minimum)) characters" }
            if let maximum = s["maxLength"]?.numeric, Double(text.count) > maximum { return "\(path): longer than \(Self.format(maximum)) characters" }
            if case .string(let pattern)? = s["pattern"], let compiled = patterns[pattern],
               compiled.regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) == nil {
                return "\(path): does not match \(pattern)"
            }
        }
        if case .array(let elements) = value {
            if let minimum = s["minItems"]?.numeric, Double(elements.count) < minimum { return "\(path): fewer than \(Self.format(minimum)) items" }
            if let maximum = s["maxItems"]?.numeric, Double(elements.count) > maximum { return "\(path): more than \(Self.format(maximum)) items" }
            if let items = s["items"] {
                for (index, element) in elements.enumerated() {
                    if let problem = violation(of: items, by: element, at: "\(path)[\(index)]") { return problem }
                }
            }
        }
        if case .object(let fields) = value {
            if case .array(let required)? = s["required"] {
                for case .string(let name) in required where fields[name] == nil { return "\(path).\(name): missing" }
            }
            let properties: [String: JSONValue] = if case .object(let p)? = s["properties"] { p } else { [:] }
            for name in fields.keys.sorted() {
                if let property = properties[name] {
                    if let problem = violation(of: property, by: fields[name]!, at: "\(path).\(name)") { return problem }
                } else if case .bool(false)? = s["additionalProperties"] {
                    return "\(path).\(name): unknown field"
                }
            }
        }
        return nil
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

/// A schema's compiled `pattern`. NSRegularExpression is immutable once made
/// and documented as safe to use from any thread.
private struct CompiledPattern: @unchecked Sendable {
    let regex: NSRegularExpression
}

public struct EventSchemaError: Error, CustomStringConvertible {
    public var source: String
    public var message: String
    public var description: String { "event schema \(source): \(message)" }
}
