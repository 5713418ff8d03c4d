-- Gives the records of one chunk different tenants (a, b, a, none, a number), each
-- record one key (so no table order is involved) and its own timestamp.
n = 0
function tenant(tag, ts, record)
  n = n + 1
  local records = {{tenant = "a"}, {tenant = "b"}, {tenant = "a"}, {other = "x"}, {tenant = 5}}
  return 1, 1700000000 + n, records[n]
end
