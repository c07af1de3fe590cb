"""SIP signalling: messages and URIs, transport, transactions, dialogs, auth, registrar, user agent."""
