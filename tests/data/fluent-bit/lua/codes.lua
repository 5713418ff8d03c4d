-- One record per return code (codes.log says which).
function cb(tag, ts, record)
  local k = record.k
  record.seen = true
  if k == "drop" then return -1, ts, record end
  if k == "keep" then return 0, 0, {} end
  if k == "mod" then return 1, 100.25, record end
  if k == "modkeep" then return 2, 100.25, record end
  if k == "code3" then return 3, 100.25, record end
  if k == "strcode" then return "1", "7.5", record end
  if k == "floatcode" then return 1.9, 5, record end
  if k == "nilts" then return 1, nil, record end
  if k == "strts" then return 1, "12.75", record end
  if k == "onlycode" then return -1 end
  if k == "newempty" then return 2, ts, {} end
end
