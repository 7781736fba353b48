import Foundation
import Testing
@testable import WorkerCLI

/// A log line is one line whatever a job holds: a kind or an error with a
/// line break in it cannot forge a line of its own, in any format.
@Suite struct LogFormatTests {
    @Test func lineBreaksInMessagesAndValuesAreEscapedInEveryFormat() throws {
        let forged = "refund.requested\n2026-11-27T00:00:00.000Z info workerd: job done"
        for format in LogFormat.allCases {
            let line = StructuredLogHandler.line(
                format: format, time: Date(timeIntervalSince1970: 0), level: .error, label: "workerd",
                message: "job dead-lettered\r\nforged", fields: ["kind": forged, "job_id": "42"])
            #expect(!line.contains("\n") && !line.contains("\r"), "\(format): \(line)")
            #expect(line.contains("42"), "\(format): \(line)")
        }
        let text = StructuredLogHandler.line(
            format: .text, time: Date(timeIntervalSince1970: 0), level: .info, label: "workerd",
            message: "worker started", fields: ["queues": "default", "note": "two words"])
        #expect(text == #"1970-01-01T00:00:00.000Z info workerd: note="two words" queues=default worker started"#)
    }
}
