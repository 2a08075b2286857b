"""The protobuf wire level of an Export request: partial views, per-span columns, strict
checks, encoding and splicing bytes, and the bounded memo they share. No users in here."""
