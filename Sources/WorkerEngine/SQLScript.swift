/// Splits a migration file into statements. postgres-nio speaks the extended
/// protocol, which takes one statement per query, so a file is sent statement
/// by statement; this splitter knows enough of PostgreSQL's lexical rules
/// (quotes, dollar quoting, comments) not to cut inside a function body.
public enum SQLScript {
    public static func statements(in text: String) -> [String] {
        let chars = Array(text.unicodeScalars)
        var statements: [String] = []
        var current = String.UnicodeScalarView()
        var hasCode = false
        var i = 0

        func flush() {
            let statement = String(current).trimmingCharacters(in: .whitespacesAndNewlines)
            if hasCode && !statement.isEmpty { statements.append(statement) }
            current = String.UnicodeScalarView()
            hasCode = false
        }
        func copy(until end: Int) {
            let stop = min(end, chars.count)
            current.append(contentsOf: chars[i..<stop])
            i = stop
        }
        func find(_ needle: [Unicode.Scalar], from start: Int) -> Int? {
            guard needle.count <= chars.count else { return nil }
            var j = start
            while j + needle.count <= chars.count {
                if Array(chars[j..<j + needle.count]) == needle { return j }
                j += 1
            }
            return nil
        }

        while i < chars.count {
            let c = chars[i]
            let next: Unicode.Scalar? = i + 1 < chars.count ? chars[i + 1] : nil
            switch c {
            case "-" where next == "-":
                // To the line's end, which PostgreSQL's lexer finds at a CR as at a LF.
                let end = (chars[i...].firstIndex { $0 == "\n" || $0 == "\r" } ?? chars.count - 1) + 1
                copy(until: end)
            case "/" where next == "*":
                copy(until: (find(["*", "/"], from: i + 2) ?? chars.count) + 2)
            case "'", "\"":
                hasCode = true
                var j = i + 1
                while j < chars.count {
                    if chars[j] == c {
                        if j + 1 < chars.count && chars[j + 1] == c { j += 2; continue }
                        break
                    }
                    j += 1
                }
                copy(until: j + 1)
            case "$":
                hasCode = true
                // A dollar quote is $tag$ with tag empty or an identifier; $1 is a parameter.
                var j = i + 1
                while j < chars.count, chars[j] == "_" || chars[j].properties.isAlphabetic
                    || (j > i + 1 && chars[j].properties.numericType != nil) { j += 1 }
                if j < chars.count, chars[j] == "$" {
                    let tag = Array(chars[i...j])
                    let close = find(tag, from: j + 1).map { $0 + tag.count } ?? chars.count
                    copy(until: close)
                } else {
                    copy(until: i + 1)
                }
            case ";":
                i += 1
                flush()
            default:
                if !c.properties.isWhitespace { hasCode = true }
                copy(until: i + 1)
            }
        }
        flush()
        return statements
    }
}

import Foundation
