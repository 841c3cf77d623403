"""The pure controllers: Chiron's local and global autoscalers, the guard rails, the baselines.

Every policy is `decide(snapshot, tuning, state) -> (decision, state)` (`policy.BoundPolicy`):
no I/O, no clock (time is `snapshot.now_s`), no randomness, and a `Reason` on every value.
`chiron` composes `local` (batch size), `restart` (when a batch-size change is worth a pod
restart), `global_scaling` (instance counts from `interactive_scaling` and `batch_scaling`, the
latter on `waiting_time`'s CLT bound) and `guards`; `actuation` keeps controller memory honest
about changes that were not applied. `baselines` holds the policies Chiron is measured against.
"""
