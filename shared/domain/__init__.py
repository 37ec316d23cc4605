"""SMS domain rules shared by more than one daemon: phone numbers (`numbers`), API keys
(`apikeys`), Kannel compatibility (`kannel`), suppression lists (`suppression`), the URL guard
(`urlguard`), callback signatures (`callback_signing`), the shared deliver_sm intake (`intake`)
and receipt matching (`dlr`). It may import `shared.queue`, `shared.smpp` and `shared.core`,
never `shared.runtime`.
"""
