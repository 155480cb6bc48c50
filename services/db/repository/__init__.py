"""Every query OMNI2, the dashboard and `omni-trace users` make, as plain async functions over
a session, one module per table group:

users          users, roles, blocks, password hashes and token generations
conversations  conversations, messages, and saving a turn (its messages, usage, flow events)
flow           flow events (OMNI2's steps, the dashboard's refusals)
usage          usage rows, the rate window, the day's usage and its reservations
slots          the open-connection slots OMNI2 replicas share
logins         the dashboard's failed logins (shared by its replicas)
"""
