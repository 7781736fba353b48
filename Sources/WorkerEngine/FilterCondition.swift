import PostgresNIO

extension PostgresQuery.StringInterpolation {
    /// `(value IS NULL OR <test>value<end>)`, the value bound as a parameter
    /// of `type`: a filter's condition, which an absent value leaves open.
    mutating func appendCondition<Value: PostgresDynamicTypeEncodable>(
        _ value: Value?, as type: String, _ test: String, _ end: String = ""
    ) {
        appendInterpolation(unescaped: "(")
        appendInterpolation(value)
        appendInterpolation(unescaped: "::\(type) IS NULL OR \(test)")
        appendInterpolation(value)
        appendInterpolation(unescaped: "::\(type)\(end))")
    }
}
