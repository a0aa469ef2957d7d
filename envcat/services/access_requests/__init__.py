"""The access request, in one place (DESIGN §5 to §7; issue #13).

`store` keeps it in Redis (Lua scripts only), `lifecycle` creates, shows, waits on,
cancels, approves and denies it, `machine`, `device` and `login` are the other ways
one is made (a workload or service token, a device key, `envcat login`), `delivery`
carries out an approval on the worker, `sweep` expires what nobody collected and
`redrive` publishes again an approval whose task was lost.
"""
