import WorkerEngine

extension HandlerRegistry {
    /// Every handler this build of workerd knows.
    public static func standard(
        defaultPolicy: RetryPolicy = .default, gateway: any PaymentGateway = LedgerGateway()
    ) -> HandlerRegistry {
        var registry = HandlerRegistry(defaultPolicy: defaultPolicy)
        registry.register("noop", NoopHandler())
        registry.register("demo.task", DemoHandler())
        registry.register("refund.requested", RefundHandler())
        registry.register("booking.requested", BookingHandler(gateway: gateway))
        return registry
    }
}
