-- Lifetime value and a simple tier per customer.
select customer_id, email, phone, first_name, last_name, postal_code,
       order_count,
       cast(revenue as decimal(18, 2)) as lifetime_value,
       case when revenue >= 1000 then 'gold'
            when revenue >= 400 then 'silver'
            else 'bronze' end as value_tier
from customer_360.unified_customers
