-- A script that changes the metatable of its record (Fluent Bit runtime test invalid_metatable, and a type change).
function cb(tag, ts, r)
  if r.k == "mod" then getmetatable(r)[10] = "hoge" end
  if r.k == "keep" then getmetatable(r).type = 1 end
  r.seen = true
  return 2, ts, r
end
