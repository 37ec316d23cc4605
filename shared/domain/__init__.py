"""SMS domain rules shared by more than one daemon: phone numbers (`numbers`), API keys
(`apikeys`), Kannel compatibility (`kannel`), suppression lists (`suppression`), the URL guard
(`urlguard`), callback signatures (`callback_signing`) and the shared deliver_sm intake
(`intake`). Receipt matching is the sender's (`services/sender/matching.py`). It may import
`shared.queue`, `shared.smpp` and `shared.core`, never `shared.runtime`.
"""
