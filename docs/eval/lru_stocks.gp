set ytics ("GameStart" 0, "RottenFishCo" 1, "BoarCo" 2, "MenhirCo" 3, "DruidTools" 4, "PotionWorks" 5, "RomanRoads" 6, "WildBoarFarms" 7, "ObelixStone" 8, "GaulTelecom" 9, "AsterixAir" 10, "VillageBard" 11)
set yrange [-0.7:11.7]
set arrow 1 from 0.501, graph 0 to 0.501, graph 1 nohead dt 2 lc rgb '#888888'
set label 1 "1: 4 stocks A, p=0" at 0.601, graph 1.04 left font ',9'
set arrow 2 from 5.102, graph 0 to 5.102, graph 1 nohead dt 2 lc rgb '#888888'
set label 2 "2: 4 other stocks B, p=0" at 5.202, graph 1.04 left font ',9'
set arrow 3 from 9.692, graph 0 to 9.692, graph 1 nohead dt 2 lc rgb '#888888'
set label 3 "3: all 12 stocks, p=0" at 9.792, graph 1.04 left font ',9'
set arrow 4 from 14.264, graph 0 to 14.264, graph 1 nohead dt 2 lc rgb '#888888'
set label 4 "4: 4 stocks A, p=0.5" at 14.364, graph 1.04 left font ',9'
